"""Config rules for GPU layouts that cannot work (issue #14): one line naming the options and the reason."""

from __future__ import annotations

import pytest

from rlhf_dist.config import ConfigError, load_config

ROLES = ("policy", "critic", "reference", "reward", "rollout")


def _cuda(*overrides: str, gpus: float = 1):
    base = ["cluster.device=cuda", *(f"cluster.{r}.gpus_per_actor={gpus}" for r in ROLES)]
    return load_config("configs/tiny.yaml", base + list(overrides))


def _colocated(*overrides: str):
    return _cuda("cluster.colocate=true", *overrides, gpus=0.2)


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as err:
        call(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text.strip(), text  # one line
    return text


def test_nccl_sync_on_colocated_gpus_is_rejected_with_the_fix():
    text = _error(_colocated, "rollout.sync_backend=nccl")
    assert "rollout.sync_backend 'nccl' with cluster.colocate true" in text
    assert "NCCL refuses two ranks on one device" in text and "'cuda_ipc'" in text


def test_cuda_ipc_needs_colocated_cuda_vllm():
    text = _error(_cuda, "rollout.sync_backend=cuda_ipc")
    assert "rollout.sync_backend 'cuda_ipc' needs cluster.colocate true" in text
    text = _error(load_config, "configs/tiny.yaml", ["rollout.sync_backend=cuda_ipc"])
    assert "'cuda_ipc' needs cluster.device 'cuda' and rollout.backend 'vllm'" in text
    text = _error(_colocated, "rollout.sync_backend=cuda_ipc", "rollout.backend=hf")
    assert "rollout.backend 'vllm'" in text


def test_the_valid_sync_layouts_pass():
    assert _colocated("rollout.sync_backend=cuda_ipc").rollout.sync_backend == "cuda_ipc"
    assert _cuda("rollout.sync_backend=nccl").rollout.sync_backend == "nccl"
    assert _colocated().rollout.sync_backend == "object_store"  # any layout


def test_colocated_tensor_parallel_needs_the_gpus_in_the_rollout_actor():
    text = _error(_colocated, "rollout.tensor_parallel_size=2")
    assert "cluster.rollout.gpus_per_actor (0.2) < rollout.tensor_parallel_size (2) with cluster.colocate true" in text
    assert "each engine sees only the GPUs its actor reserves" in text
    text = _error(_cuda, "rollout.tensor_parallel_size=2")  # disaggregated: the same rule
    assert "cluster.rollout.gpus_per_actor (1) < rollout.tensor_parallel_size (2):" in text


def test_asymmetric_colocated_layout_is_valid():
    # 2 policy ranks on a fraction of a GPU each, one TP-2 engine that reserves two whole GPUs
    cfg = _colocated("rollout.tensor_parallel_size=2", "cluster.rollout.gpus_per_actor=2",
                     "rollout.sync_backend=cuda_ipc")
    assert cfg.rollout.tensor_parallel_size == 2 and cfg.cluster.policy.gpus_per_actor == 0.2
    assert cfg.cluster.rollout.gpus_per_actor == 2


def test_gpu_amounts_above_one_must_be_whole():
    text = _error(_cuda, "rollout.tensor_parallel_size=2", "cluster.rollout.gpus_per_actor=2.5")
    assert "cluster.rollout.gpus_per_actor is 2.5: Ray grants more than one GPU in whole GPUs only" in text


def test_reference_zero_stage_accepts_0_and_3_only():
    assert _cuda("ppo.reference_zero_stage=3").ppo.reference_zero_stage == 3
    text = _error(_cuda, "ppo.reference_zero_stage=2")
    assert "ppo.reference_zero_stage" in text


def test_nccl_with_fractional_gpus_is_rejected_even_disaggregated():
    text = _error(_cuda, "rollout.sync_backend=nccl", "cluster.rollout.gpus_per_actor=0.5")
    assert "rollout.sync_backend 'nccl' with cluster.rollout.gpus_per_actor 0.5: Ray may put" in text
    assert "NCCL refuses two ranks on one device" in text
    # engines on whole GPUs: the policy and the other roles may share theirs (policy rank 0 meets no engine)
    cfg = _cuda("rollout.sync_backend=nccl", "cluster.policy.num_actors=1", "cluster.policy.gpus_per_actor=0.5",
                "cluster.critic.gpus_per_actor=0.2", "cluster.reference.gpus_per_actor=0.2")
    assert cfg.rollout.sync_backend == "nccl"
