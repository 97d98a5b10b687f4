"""Config rules for GPU layouts that cannot work (issue #14): one line naming the options and the reason."""

from __future__ import annotations

import pytest

from rlhf_dist.config import ConfigError, load_config

ROLES = ("policy", "critic", "reference", "reward", "rollout")


def _cuda(*overrides: str, gpus: float = 1):
    base = ["cluster.device=cuda", *(f"cluster.{r}.gpus_per_actor={gpus}" for r in ROLES)]
    return load_config("configs/tiny.yaml", base + list(overrides))


def _colocated(*overrides: str):
    # tiny has 2 policy ranks and one of each other role: bundle 0 holds 0.3 + 3 x 0.2 = 0.9 GPU, bundle 1
    # (policy rank 1 alone) 0.3, so the two policy ranks cannot be packed onto one GPU (NCCL refuses that)
    return _cuda("cluster.colocate=true", "cluster.policy.gpus_per_actor=0.3", *overrides, gpus=0.2)


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
    # 2 policy ranks on a fraction of a GPU each, one TP-2 engine that reserves two whole GPUs (weights through
    # the object store: cuda_ipc cannot reach a TP engine's second GPU, see test_cuda_ipc_refuses_...)
    cfg = _colocated("rollout.tensor_parallel_size=2", "cluster.rollout.gpus_per_actor=2")
    assert cfg.rollout.tensor_parallel_size == 2 and cfg.cluster.policy.gpus_per_actor == 0.3
    assert cfg.cluster.rollout.gpus_per_actor == 2 and cfg.rollout.sync_backend == "object_store"


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


# ---- issue #23: layouts that pass today's rules but fail at the first sync or the first collective ----
def test_cuda_ipc_refuses_more_engines_than_policy_ranks():
    text = _error(_colocated, "rollout.sync_backend=cuda_ipc", "rollout.num_engines=3")
    assert "rollout.sync_backend 'cuda_ipc' with rollout.num_engines 3 > cluster.policy.num_actors 2" in text
    assert "engines 2..2 sit on GPUs with no policy rank" in text and "sync_backend 'object_store'" in text
    # only that rule: the same layout passes with the engines the policy ranks can serve, or the object store
    assert _colocated("rollout.sync_backend=cuda_ipc", "rollout.num_engines=2").rollout.num_engines == 2
    assert _colocated("rollout.num_engines=3").rollout.num_engines == 3


def test_cuda_ipc_refuses_colocated_tensor_parallel():
    bad = ("rollout.sync_backend=cuda_ipc", "rollout.tensor_parallel_size=2", "cluster.rollout.gpus_per_actor=2")
    text = _error(_colocated, *bad)
    assert "rollout.sync_backend 'cuda_ipc' with rollout.tensor_parallel_size 2 and cluster.colocate true" in text
    assert "its bundle holds one policy rank" in text and "use tensor_parallel_size 1 or sync_backend" in text
    assert _colocated(*bad[1:]).rollout.tensor_parallel_size == 2  # the fix it names: object_store


def test_cuda_ipc_refuses_a_bundle_of_more_than_one_gpu():
    # engine on a whole GPU beside policy rank 0's fraction: the bundle spans two GPUs, IPC cannot cross them
    text = _error(_colocated, "rollout.sync_backend=cuda_ipc", "cluster.rollout.gpus_per_actor=1")
    assert "bundle 0 (policy, critic, reference, rollout) reserves 1.7 GPUs" in text
    assert "engine 0 and policy rank 0 on different GPUs" in text and "sums to at most 1" in text
    assert _colocated("cluster.rollout.gpus_per_actor=1").cluster.rollout.gpus_per_actor == 1  # object_store: fine
    # exactly one GPU (float sum of 5 x 0.2 on the 8B preset's shape) is accepted
    five = _cuda("cluster.colocate=true", "rollout.sync_backend=cuda_ipc", "ppo.rewards=[{kind: model}]",
                 "cluster.policy.num_actors=1", gpus=0.2)
    assert five.rollout.sync_backend == "cuda_ipc"


def test_two_ranks_of_an_nccl_group_must_not_fit_on_one_gpu_disaggregated():
    text = _error(_cuda, "cluster.policy.gpus_per_actor=0.5")
    assert "cluster.policy.gpus_per_actor 0.5 with 2 ranks: two policy ranks fit on one GPU" in text
    assert "NCCL group refuses two ranks on one device" in text and "more than half a GPU" in text
    assert _cuda("cluster.policy.gpus_per_actor=0.6").cluster.policy.gpus_per_actor == 0.6
    assert _cuda("cluster.policy.gpus_per_actor=0.5", "cluster.policy.num_actors=1").cluster.policy.num_actors == 1
    # the other NCCL groups: the critic (GAE only) and the ZeRO-3 reference; a replicated reference is no group
    text = _error(_cuda, "cluster.critic.num_actors=2", "cluster.critic.gpus_per_actor=0.25")
    assert "two critic ranks fit on one GPU" in text
    assert _cuda("cluster.critic.num_actors=2", "cluster.critic.gpus_per_actor=0.25", "ppo.advantage=grpo",
                 "rollout.sampling.samples_per_prompt=2")
    text = _error(_cuda, "cluster.reference.num_actors=2", "cluster.reference.gpus_per_actor=0.5",
                  "ppo.reference_zero_stage=3")
    assert "two reference ranks fit on one GPU" in text
    assert _cuda("cluster.reference.num_actors=2", "cluster.reference.gpus_per_actor=0.5")


def test_two_ranks_of_an_nccl_group_must_not_fit_on_one_gpu_colocated():
    # tiny colocated at 0.2 GPU a role: bundle 0 holds 0.8, bundle 1 (policy rank 1 alone) 0.2: one GPU
    text = _error(_cuda, "cluster.colocate=true", gpus=0.2)
    assert "cluster.colocate true: two bundles holding policy ranks reserve 0.2 + 0.8 GPU" in text
    assert "two policy ranks fit on one GPU" in text
    assert _cuda("cluster.colocate=true", "cluster.policy.gpus_per_actor=0.3", gpus=0.2).cluster.colocate
