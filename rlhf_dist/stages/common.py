"""Helpers shared by the stage entry points: run dirs, seeds, data files."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlhf_dist.config import RLHFConfig, config_to_yaml

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_run_dir(cfg: RLHFConfig) -> Path:
    """Create the run directory and record the resolved config there."""
    run_dir = Path(cfg.run.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    return run_dir


@dataclass(frozen=True)
class DataFiles:
    sft: Path
    pairs: Path
    eval_pairs: Path
    prompts: Path
    eval_prompts: Path
    pairs_format: str
    eval_pairs_format: str


def resolve_data_files(cfg: RLHFConfig) -> DataFiles:
    """Configured data paths; any left unset is filled with built-in demo data in <run>/data."""
    d = cfg.data
    paths = {"sft": d.sft_path, "pairs": d.pairs_path, "eval_pairs": d.eval_pairs_path,
             "prompts": d.prompts_path, "eval_prompts": d.eval_prompts_path}
    demo = {}
    if any(p is None for p in paths.values()):
        from rlhf_dist.data.demo import write_demo_files

        demo_dir = Path(cfg.run.output_dir) / "data"
        demo = write_demo_files(demo_dir, n=d.demo_size, seed=cfg.run.seed)
        log.info("built-in demo data (%d rows per split) written to %s", d.demo_size, demo_dir)
    resolved = {k: Path(v) if v is not None else demo[k] for k, v in paths.items()}
    return DataFiles(
        **resolved,
        pairs_format=d.pairs_format if d.pairs_path else "pair",
        eval_pairs_format=d.pairs_format if d.eval_pairs_path else "pair",
    )


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)
