"""When the rollout engines sleep (give their GPU memory back): colocated, on CUDA, with vLLM only."""

from __future__ import annotations

import pytest

from rlhf_dist.config import load_config
from rlhf_dist.config.topology import engine_sleep_level, engines_sleep


# policy 0.6: its 2 NCCL ranks must not fit on one GPU together (config rule), colocated or not
GPUS = [f"cluster.{role}.gpus_per_actor=0.2" for role in ("reference", "critic", "reward")] + [
    "cluster.policy.gpus_per_actor=0.6", "cluster.rollout.gpus_per_actor=1"]


def _cfg(*overrides: str):
    cuda = "cluster.device=cuda" in overrides
    return load_config("configs/tiny.yaml", ["tracking.tensorboard=false", *(GPUS if cuda else []), *overrides])


def test_colocated_vllm_on_cuda_sleeps():
    assert engines_sleep(_cfg("cluster.colocate=true", "cluster.device=cuda", "rollout.backend=vllm"))


@pytest.mark.parametrize("odd_one_out", ["cluster.colocate=false", "cluster.device=cpu", "rollout.backend=hf"])
def test_any_other_layout_keeps_the_engines_awake(odd_one_out):
    base = {"cluster.colocate": "true", "cluster.device": "cuda", "rollout.backend": "vllm"}
    key, value = odd_one_out.split("=")
    base[key] = value
    assert not engines_sleep(_cfg(*(f"{k}={v}" for k, v in base.items())))


@pytest.mark.parametrize("at_load, adapter_sync, level", [
    (True, False, 1),   # build_roles: step 1 generates with the loaded weights, no sync before it
    (True, True, 1),
    (False, True, 1),   # LoRA adapter sync: the base weights are never sent again
    (False, False, 2),  # after training: the sync rewrites every weight before the next generation
])
def test_sleep_level_discards_weights_only_where_a_full_sync_follows(at_load, adapter_sync, level):
    assert engine_sleep_level(at_load, adapter_sync) == level
