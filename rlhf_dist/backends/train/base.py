"""The training-engine interface: what roles and stages need from DeepSpeed or plain torch.

    engine.backward(loss)        # scaled for gradient accumulation
    info = engine.step()         # optimizer step at an accumulation boundary (else no-op)

A non-finite grad norm skips the update (gradients dropped) and counts it in
`engine.skipped_updates`, so callers can abort past a threshold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlhf_dist.config.schema_parts import TrainConfig


@dataclass
class StepInfo:
    """What one engine.step() did."""

    applied: bool  # an optimizer update happened (accumulation boundary and finite grads)
    boundary: bool  # this micro-step closed an accumulation window
    grad_norm: float | None = None
    lr: float | None = None


class TrainEngine(ABC):
    """One rank's view of a trainable model."""

    model: nn.Module
    skipped_updates: int = 0

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> StepInfo: ...

    @abstractmethod
    def save_checkpoint(self, directory: Path, tag: str) -> None: ...

    @abstractmethod
    def load_checkpoint(self, directory: Path, tag: str) -> None: ...

    @abstractmethod
    def full_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        """Complete (gathered) weights on every rank, all at once (tests, small models; the weight sync and the
        export walk the model in buckets with `gathered` instead).

        copy=False may return the live weights (detached) where no gather is needed: valid until the
        next update."""

    def release_gathered(self) -> None:
        """Let go of whole parameters a forward left gathered (ZeRO-3 only; a no-op elsewhere)."""

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    # ---- weights one bucket at a time (weight sync; backends/sync) ----
    @property
    def module(self) -> nn.Module:
        """The original module (state-dict names without any wrapper prefix)."""
        return self.model

    @property
    def shards_parameters(self) -> bool:
        """True when a rank holds only a slice of each weight (ZeRO-3): reading one needs `gathered`."""
        return False

    def parameter_specs(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, full shape, dtype name) of every parameter in model order, tied ones under each name.
        Metadata only: no gather, on every rank the same."""
        params = self.module.named_parameters(remove_duplicate=False)
        return [(name, tuple(p.shape), str(p.dtype)) for name, p in params]

    @contextmanager
    def gathered(self, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
        """The complete (detached) tensors of these parameters, valid inside the block only.

        Below ZeRO-3 they are the live weights themselves (no copy: do not write to them). Under ZeRO-3
        this is a collective (every rank enters with the same names) that gathers just these parameters
        and releases them on exit, so a caller walking the model in buckets never holds more than one."""
        params = dict(self.module.named_parameters(remove_duplicate=False))
        yield {name: params[name].detach() for name in names}


def accumulation_steps(cfg: TrainConfig, dp_size: int) -> int:
    return cfg.global_batch_size // (cfg.micro_batch_size * dp_size)


# Devices with a fused AdamW kernel in torch (one kernel over all tensors instead of ~10 ops each).
_FUSED_ADAM_DEVICES = ("cpu", "cuda")


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters (torch's, so DeepSpeed needs no op compilation on CPU).

    Fused when every parameter is a float tensor on CPU or CUDA: the for-loop AdamW took 0.86 s
    per step on a 135M model on one CPU thread, the fused one 0.17 s (bench/README.md).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    fused = all(p.is_floating_point() and p.device.type in _FUSED_ADAM_DEVICES for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay,
                             fused=fused or None)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_updates: int):
    # imported here: transformers' optimization module pulls in its trainer utilities (and peft), ~1 s that
    # every actor importing the workers would pay, the frozen reference and the engines included
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=max(total_updates, 1))
