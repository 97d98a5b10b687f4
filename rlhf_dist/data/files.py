"""The data files a stage reads: configured paths, or built-in demo data written into the run dir."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.pairs import load_preference_pairs
from rlhf_dist.data.tokenize import encode_pair_dataset

log = logging.getLogger(__name__)


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


def load_encoded_pairs(cfg: RLHFConfig, tokenizer, path: Path, fmt: str, what: str) -> list:
    """Read, validate and tokenise a preference-pair file as data.* says; logs what was kept and why not."""
    d = cfg.data
    ab_opts = dict(tie_policy=d.tie_policy, min_confidence=d.min_confidence, confidence_as_weight=d.confidence_as_weight)
    pairs, report = load_preference_pairs(
        path, fmt, on_error=d.on_error, min_gap=d.rating_min_gap if fmt == "rating" else 0.0,
        **(ab_opts if fmt == "ab" else {}),
    )
    log.info("%s %s: %s", what, path, report.summary())
    encoded = encode_pair_dataset(tokenizer, pairs, d.max_length, d.truncation, d.on_error)
    log.info("%s: %s", what, encoded.summary())
    for err in encoded.errors[:20]:
        log.warning("%s: %s", what, err)
    if not encoded.examples:
        raise ValueError(f"{what}: no usable preference pairs in {path}")
    return encoded.examples
