"""A frozen model sharded over a group with DeepSpeed ZeRO-3 inference (the sharded reference).

    with zero3_inference_loading("bfloat16"):                  # every rank of the group, together
        model = AutoModelForCausalLM.from_pretrained(path)      # built partitioned, never whole
    module = zero3_inference_module(model, dtype="bfloat16")   # the engine that runs the forwards
    out = module(input_ids=ids, attention_mask=mask)            # every rank, the same number of times

Each rank keeps 1/N of every weight; a forward gathers one layer's weights at a time (ZeRO-3's
hooks), uses them and frees them. No optimizer, no gradients. Forwards are collectives: every rank
must run as many as the others (workers/inference.py pads its chunks to the group's maximum).
torch.distributed must be initialised first (the group's init_distributed).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from torch import nn

from rlhf_dist.backends.patches import disable_deepspeed_cpu_shm_op
from rlhf_dist.tracking.quiet import silence_known_warnings

# ZeRO-3 knobs for inference: gather at most ~one large layer ahead, keep small tensors (norms) whole.
_PREFETCH = 50_000_000
_PERSISTENCE = 100_000


def zero3_inference_config(dtype: str, world_size: int) -> dict[str, Any]:
    """DeepSpeed config of a frozen ZeRO-3 module (pure; no DeepSpeed import)."""
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r} (float32, bfloat16, float16)")
    return {
        "train_micro_batch_size_per_gpu": 1,
        "train_batch_size": world_size,  # required by DeepSpeed, never used: no training
        "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": _PREFETCH,
                              "stage3_param_persistence_threshold": _PERSISTENCE},
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
    }


def zero3_inference_loading(dtype: str) -> AbstractContextManager:
    """Open around the frozen model's from_pretrained (every rank together): it is built partitioned over the
    current group (backends/train/zero_init.py), so no rank holds it whole; then zero3_inference_module."""
    import torch.distributed as tdist

    from rlhf_dist.backends.train.zero_init import partitioned_loading

    if not (tdist.is_available() and tdist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: the reference group must join one first")
    return partitioned_loading(zero3_inference_config(dtype, tdist.get_world_size()))


def zero3_inference_module(model: nn.Module, dtype: str) -> nn.Module:
    """Partition `model`'s weights over the current torch.distributed group; returns the callable engine."""
    import torch.distributed as tdist

    import deepspeed

    if not (tdist.is_available() and tdist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: the reference group must join one first")
    disable_deepspeed_cpu_shm_op()
    silence_known_warnings()
    model.requires_grad_(False).eval()
    engine, *_ = deepspeed.initialize(model=model, config=zero3_inference_config(dtype, tdist.get_world_size()))
    engine.eval()
    return engine
