"""deepspeed_config: the DeepSpeed config dict built from TrainConfig (pure, no DeepSpeed import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_dist.backends.train.deepspeed_engine import deepspeed_config
from rlhf_dist.config.schema_parts import TrainConfig


def test_zero2_fp32_defaults():
    cfg = TrainConfig(zero_stage=2, micro_batch_size=2, global_batch_size=16, grad_clip=1.0)
    ds = deepspeed_config(cfg, dp_size=2, dtype="float32")
    assert ds["train_micro_batch_size_per_gpu"] == 2
    assert ds["gradient_accumulation_steps"] == 4  # 16 / (2 * 2)
    assert ds["train_batch_size"] == 16
    assert ds["gradient_clipping"] == 1.0
    assert ds["bf16"] == {"enabled": False} and ds["fp16"] == {"enabled": False}
    assert ds["zero_force_ds_cpu_optimizer"] is False
    assert ds["wall_clock_breakdown"] is False
    assert ds["steps_per_print"] >= 10**9
    # we pass our own torch optimizer and scheduler: no DeepSpeed blocks (no op compilation)
    assert "optimizer" not in ds and "scheduler" not in ds
    zero = ds["zero_optimization"]
    assert zero["stage"] == 2
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    assert zero["reduce_bucket_size"] > 0 and zero["allgather_bucket_size"] > 0
    assert not any(k.startswith("stage3_") for k in zero)
    # DeepSpeed's own invariant: train_batch = micro * accumulation * dp
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2


@pytest.mark.parametrize(
    "micro, global_, dp, accum",
    [(1, 1, 1, 1), (2, 8, 1, 4), (2, 8, 2, 2), (4, 64, 4, 4), (3, 24, 8, 1)],
)
def test_accumulation_math(micro, global_, dp, accum):
    cfg = TrainConfig(micro_batch_size=micro, global_batch_size=global_)
    ds = deepspeed_config(cfg, dp_size=dp, dtype="float32")
    assert ds["gradient_accumulation_steps"] == accum
    assert ds["train_batch_size"] == global_ == micro * accum * dp


@pytest.mark.parametrize("micro, global_, dp", [(2, 6, 2), (4, 8, 4), (3, 10, 1)])
def test_indivisible_global_batch_is_an_error(micro, global_, dp):
    cfg = TrainConfig(micro_batch_size=micro, global_batch_size=global_)
    with pytest.raises(ValueError, match="multiple of"):
        deepspeed_config(cfg, dp_size=dp, dtype="float32")


def test_zero3_with_both_offloads_and_bf16():
    cfg = TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True, grad_clip=None)
    ds = deepspeed_config(cfg, dp_size=4, dtype="bfloat16")
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert zero["stage3_prefetch_bucket_size"] > 0
    assert zero["stage3_param_persistence_threshold"] > 0
    assert ds["gradient_clipping"] == 0.0  # None disables clipping
    assert ds["bf16"] == {"enabled": True, "check_grad_overflow": True} and ds["fp16"] == {"enabled": False}
    assert ds["zero_force_ds_cpu_optimizer"] is False


def test_zero1_optimizer_offload_fp16():
    cfg = TrainConfig(zero_stage=1, offload_optimizer=True, grad_clip=0.5)
    ds = deepspeed_config(cfg, dp_size=1, dtype="float16")
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert "offload_param" not in ds["zero_optimization"]
    assert ds["gradient_clipping"] == 0.5
    assert ds["fp16"] == {"enabled": True} and ds["bf16"] == {"enabled": False}


def test_zero0_is_plain_data_parallel():
    ds = deepspeed_config(TrainConfig(zero_stage=0), dp_size=2, dtype="float32")
    assert ds["zero_optimization"] == {"stage": 0}


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"zero_stage": 0, "offload_optimizer": True}, "offload_optimizer"),
        ({"zero_stage": 2, "offload_params": True}, "offload_params"),
    ],
)
def test_offload_needs_a_matching_zero_stage(fields, match):
    with pytest.raises(ValueError, match=match):
        deepspeed_config(TrainConfig(**fields), dp_size=1, dtype="float32")


def test_bad_dtype_and_dp_size():
    with pytest.raises(ValueError, match="dtype"):
        deepspeed_config(TrainConfig(), dp_size=1, dtype="fp32")
    with pytest.raises(ValueError, match="dp_size"):
        deepspeed_config(TrainConfig(), dp_size=0, dtype="float32")


def test_config_is_json_serialisable():
    import json

    cfg = TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True)
    ds = deepspeed_config(cfg, dp_size=2, dtype="bfloat16")
    assert json.loads(json.dumps(ds)) == ds


def test_importing_the_engine_module_does_not_import_deepspeed():
    code = (
        "import sys; import rlhf_dist.backends.train, rlhf_dist.backends.train.deepspeed_engine; "
        "sys.exit(1 if 'deepspeed' in sys.modules else 0)"
    )
    repo_root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo_root).returncode == 0


def test_cuda_offload_uses_deepspeeds_cpu_adam_on_pinned_memory():
    cfg = TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True, lr=2e-7, weight_decay=0.1,
                      adam_betas=(0.9, 0.95), micro_batch_size=1, global_batch_size=16)
    ds = deepspeed_config(cfg, dp_size=16, dtype="bfloat16", device="cuda")
    zero = ds["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    # an optimizer block makes DeepSpeed build DeepSpeedCPUAdam itself (AdamW mode), and insist on it
    assert ds["optimizer"] == {"type": "AdamW", "params": {"lr": 2e-7, "betas": [0.9, 0.95], "eps": 1e-8,
                                                            "weight_decay": 0.1}}
    assert ds["zero_force_ds_cpu_optimizer"] is True
    assert zero["overlap_comm"] is True
    assert "scheduler" not in ds  # the engine hands the transformers schedule over


def test_cuda_without_offload_keeps_the_torch_optimizer():
    ds = deepspeed_config(TrainConfig(zero_stage=3), dp_size=2, dtype="bfloat16", device="cuda")
    assert "optimizer" not in ds and ds["zero_force_ds_cpu_optimizer"] is False
    assert ds["zero_optimization"]["overlap_comm"] is True
    ds = deepspeed_config(TrainConfig(zero_stage=2), dp_size=2, dtype="bfloat16", device="cuda")
    assert ds["zero_optimization"]["overlap_comm"] is False  # ZeRO-3 only


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_cpu_keeps_torch_adam_unpinned_and_no_overlap(stage):
    cfg = TrainConfig(zero_stage=stage, offload_optimizer=True)
    ds = deepspeed_config(cfg, dp_size=2, dtype="float32")  # device defaults to cpu
    assert ds == deepspeed_config(cfg, dp_size=2, dtype="float32", device="cpu")
    assert "optimizer" not in ds and ds["zero_force_ds_cpu_optimizer"] is False
    assert ds["zero_optimization"]["offload_optimizer"]["pin_memory"] is False
    assert ds["zero_optimization"]["overlap_comm"] is False
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        deepspeed_config(cfg, dp_size=2, dtype="float32", device="tpu")
