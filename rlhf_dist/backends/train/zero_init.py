"""Load a ZeRO-3 model partitioned: no rank ever holds (or moves to its device) the whole model.

    with partitioned_loading(ds_config):                # every rank of the group, together
        model = load_causal_lm(cfg, model_dir)          # transformers' from_pretrained, as usual

Inside, transformers sees a live `HfDeepSpeedConfig` (its documented ZeRO-3 hook): `from_pretrained` builds
the model under `deepspeed.zero.Init`, so each module's weights are partitioned over the group as the module
is created (on this rank's accelerator, or the CPU with offload_param), and fills them one module at a time
(gather that module, rank 0 copies from the mmapped checkpoint, partition again). DeepSpeed's engine then
leaves the module where it is (it moves only modules not built under zero.Init to the device, whole).
Parameters created outside from_pretrained (a scalar head, LoRA adapters) stay ordinary tensors and are
small: the engine partitions them at initialize.

Building from a *config* under zero.Init fails in transformers' weight init (STACK.md); from_pretrained does
not. torch.distributed must be initialised first (zero.Init partitions over the current group).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from rlhf_dist.config.schema_parts import TrainConfig

_HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@contextmanager
def partitioned_loading(ds_config: dict[str, Any]) -> Iterator[None]:
    """While open, transformers' from_pretrained partitions the models it builds (ZeRO-3 `ds_config`).

    The config must be the one the engine is then built with (same stage, dtype, batch sizes and offload).
    Transformers' global ZeRO-3 switch is turned off again on exit, so later loads in this process (a
    frozen replica, an export check) are ordinary."""
    import torch.distributed as tdist
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    from rlhf_dist.backends.patches import disable_deepspeed_cpu_shm_op

    stage = ds_config.get("zero_optimization", {}).get("stage")
    if stage != 3:
        raise ValueError(f"partitioned_loading needs a ZeRO-3 config, got zero_optimization.stage {stage}")
    if not (tdist.is_available() and tdist.is_initialized()):
        raise RuntimeError("partitioned_loading: torch.distributed is not initialised (join the group first)")
    disable_deepspeed_cpu_shm_op()
    hf_config = HfDeepSpeedConfig(ds_config)  # transformers keeps only a weak reference: hold it here
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del hf_config


def training_load_context(cfg: TrainConfig, world_size: int, dtype: str, device: str) -> AbstractContextManager:
    """partitioned_loading with the engine's own DeepSpeed config where `cfg` trains under ZeRO-3; a no-op
    otherwise (ZeRO-0/1/2 and the torch backend keep a whole replica on every rank by design)."""
    if cfg.backend != "deepspeed" or cfg.zero_stage != 3:
        return nullcontext()
    from rlhf_dist.backends.train.deepspeed_engine import deepspeed_config

    return partitioned_loading(deepspeed_config(cfg, world_size, dtype, device))


def cast_unpartitioned_parameters(model: nn.Module, dtype: str) -> None:
    """Cast the float parameters not built under zero.Init to the bf16/fp16 training dtype (fp32: nothing).

    deepspeed 0.19.8 casts every parameter of a module to the training dtype at initialize, except in a module
    built under zero.Init (engine._cast_module_mixed_precision), which it takes to be in that dtype already. A
    model loaded partitioned still has parameters made after from_pretrained: LoRA adapters (peft keeps them in
    fp32) and a scalar head. Left in fp32 beside a bf16 head, ZeRO-3 refuses to flatten them together; alone
    they would train in another precision than the same model under ZeRO-2."""
    target = _HALF.get(dtype)
    if target is None:
        return
    for param in model.parameters():
        if not hasattr(param, "ds_id") and param.is_floating_point() and param.dtype != target:
            param.data = param.data.to(target)
