"""Pick the training engine a TrainConfig asks for (DeepSpeed is imported only when used)."""

from __future__ import annotations

import torch
from torch import nn

from rlhf_dist.backends.train.base import TrainEngine
from rlhf_dist.backends.train.torch_engine import TorchEngine
from rlhf_dist.config.schema_parts import TrainConfig


def build_train_engine(
    model: nn.Module, cfg: TrainConfig, total_updates: int, dtype: str, world_size: int, device: str = "cpu"
) -> TrainEngine:
    """DeepSpeed ZeRO over the already-initialised process group, or single-process torch."""
    if cfg.backend == "torch":
        if world_size != 1:
            raise ValueError(f"backend 'torch' trains on one rank; got a group of {world_size} (use deepspeed)")
        return TorchEngine(model.to(torch.device(device)), cfg, total_updates)
    from rlhf_dist.backends.train.deepspeed_engine import DeepSpeedEngine

    return DeepSpeedEngine(model, cfg, total_updates, dtype=dtype)
