"""Metrics sinks: JSONL file, TensorBoard, optional wandb, and the stage's console progress display.

    with MetricsLogger(run_dir, cfg.tracking, total=steps, desc="reward model") as log:
        log.log({"loss": 0.3}, step=1, phase="rm/train")
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from rlhf_dist.config.schema import TrackingConfig
from rlhf_dist.tracking.console import StageProgress, say

log = logging.getLogger(__name__)


def _scalar(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


class MetricsLogger:
    """Writes every logged dict to metrics.jsonl (one line per call) and TensorBoard."""

    def __init__(self, run_dir: str | Path, cfg: TrackingConfig, total: int | None = None, desc: str = "training",
                 plain_lines: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.total, self.desc = total, desc
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a") if cfg.jsonl else None
        self._tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        self._wandb = None
        if cfg.wandb_project:
            import wandb  # optional: only when configured

            self._wandb = wandb.init(project=cfg.wandb_project, dir=str(self.run_dir))
        # a bar on a terminal, plain periodic lines otherwise (tracking/console.py)
        self.progress = StageProgress(desc, total=total, enabled=bool(cfg.progress and total),
                                      plain_lines=plain_lines).start()

    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None:
        """Record `metrics` under `phase/` at `step`."""
        record = {"time": time.time(), "phase": phase, "step": step, **metrics}
        if self._jsonl:
            self._jsonl.write(json.dumps(record, default=float) + "\n")
            self._jsonl.flush()
        scalars = {k: v for k, v in ((k, _scalar(v)) for k, v in metrics.items()) if v is not None}
        if self._tb:
            for key, value in scalars.items():
                if math.isfinite(value):
                    self._tb.add_scalar(f"{phase}/{key}", value, step)
        if self._wandb:
            self._wandb.log({f"{phase}/{k}": v for k, v in scalars.items()}, step=step)

    def advance(self, n: int = 1, status: str = "") -> None:
        """Move the stage's progress display by n, with a short status."""
        self.progress.advance(n, status)

    def print(self, text: str) -> None:
        say(text)

    # ---- the supervised stages (SFT, reward model), in this process or on a Ray group ----
    def log_update(self, stats: dict[str, float], update: int, phase: str, epoch: int, epochs: int,
                   micro_steps: int) -> None:
        """One optimizer update in metrics.jsonl and the progress display (which counts micro-batches)."""
        self.log({k: v for k, v in stats.items() if k != "applied"}, step=update, phase=f"{phase}/train")
        self.advance(micro_steps, status=f"epoch {epoch}/{epochs} loss {stats['loss']:.4f}")

    def log_epoch(self, metrics: dict[str, Any], update: int, phase: str) -> None:
        """An epoch's held-out metrics (with "epoch"), logged and printed in one line."""
        self.log(metrics, step=update, phase=f"{phase}/eval")
        self.print(f"{phase}: epoch {metrics['epoch']}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))

    def close(self) -> None:
        self.progress.close()
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | Path, phase: str | None = None) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl, optionally one phase only ([] when there is no file).

    A torn last line (a run killed mid-write) is skipped, not fatal."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if phase is None or r.get("phase") == phase]
