"""Single-process torch training engine (no DeepSpeed): small models, tests, laptops."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from rlhf_dist.backends.train.base import StepInfo, TrainEngine, accumulation_steps, build_optimizer, build_scheduler
from rlhf_dist.config.schema_parts import TrainConfig


class TorchEngine(TrainEngine):
    def __init__(self, model: nn.Module, cfg: TrainConfig, total_updates: int):
        self.model = model
        self.cfg = cfg
        self.accum = accumulation_steps(cfg, dp_size=1)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, total_updates)
        self.micro_step = 0
        self.skipped_updates = 0

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def step(self) -> StepInfo:
        self.micro_step += 1
        if self.micro_step % self.accum != 0:
            return StepInfo(applied=False, boundary=False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        lr = self.scheduler.get_last_lr()[0]
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_updates += 1
            return StepInfo(applied=False, boundary=True, grad_norm=grad_norm, lr=lr)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepInfo(applied=True, boundary=True, grad_norm=grad_norm, lr=lr)

    def save_checkpoint(self, directory: Path, tag: str) -> None:
        target = Path(directory) / tag
        target.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "micro_step": self.micro_step,
                "skipped_updates": self.skipped_updates,
            },
            target / "engine.pt",
        )

    def load_checkpoint(self, directory: Path, tag: str) -> None:
        # Our own checkpoint, written by save_checkpoint: tensors and plain containers only.
        state = torch.load(Path(directory) / tag / "engine.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_step = state["micro_step"]
        self.skipped_updates = state["skipped_updates"]

    def full_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() if copy else v.detach() for k, v in self.model.state_dict().items()}
