"""Pick the training engine a TrainConfig asks for (DeepSpeed is imported only when used)."""

from __future__ import annotations

import torch
from torch import nn

from rlhf_dist.backends.train.base import TrainEngine
from rlhf_dist.backends.train.torch_engine import TorchEngine
from rlhf_dist.config.schema_parts import TrainConfig


def build_train_engine(
    model: nn.Module, cfg: TrainConfig, total_updates: int, dtype: str, world_size: int | None = None,
    device: str = "cpu",
) -> TrainEngine:
    """The engine cfg.backend asks for: single-process torch, or DeepSpeed ZeRO.

    world_size: the size of the already-initialised process group this rank belongs to (a Ray actor
    group), or None for a stage that trains in this process alone (DeepSpeed then gets a group of one).
    """
    if cfg.backend == "torch":
        if world_size not in (None, 1):
            raise ValueError(f"backend 'torch' trains on one rank; got a group of {world_size} (use deepspeed)")
        return TorchEngine(model.to(torch.device(device)), cfg, total_updates)
    from rlhf_dist.backends.train.deepspeed_engine import DeepSpeedEngine, single_process_deepspeed_engine

    if world_size is None:
        return single_process_deepspeed_engine(model, cfg, total_updates, dtype=dtype)
    return DeepSpeedEngine(model, cfg, total_updates, dtype=dtype)
