"""Which examples each rank of a supervised stage trains on, and where the stage runs (issue #23)."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.backends.train.supervised import epoch_order, update_micro_batches
from rlhf_dist.config import load_config
from rlhf_dist.config.topology import stage_overrides, stage_ranks, trains_in_driver
from rlhf_dist.config.schema_parts import TrainConfig

ORDER = list(range(100, 116))  # a stand-in epoch order: example i sits at position i - 100


def _train(micro: int, global_: int) -> TrainConfig:
    return TrainConfig(micro_batch_size=micro, global_batch_size=global_)


def test_one_rank_gets_the_one_process_micro_batches_in_order():
    assert update_micro_batches(ORDER, 1, _train(2, 8), world_size=1, rank=0) == [
        [108, 109], [110, 111], [112, 113], [114, 115]]


def test_ranks_split_each_global_batch_into_contiguous_slices():
    tcfg = _train(2, 8)
    assert update_micro_batches(ORDER, 0, tcfg, 2, 0) == [[100, 101], [102, 103]]
    assert update_micro_batches(ORDER, 0, tcfg, 2, 1) == [[104, 105], [106, 107]]
    assert update_micro_batches(ORDER, 1, tcfg, 2, 1) == [[112, 113], [114, 115]]
    # every example of the update exactly once over the ranks
    seen = [i for r in range(4) for mb in update_micro_batches(ORDER, 1, _train(1, 8), 4, r) for i in mb]
    assert seen == ORDER[8:16]


def test_a_rank_count_that_does_not_divide_the_batch_is_refused():
    with pytest.raises(ValueError, match="not a multiple"):
        update_micro_batches(ORDER, 0, _train(2, 8), 3, 0)


def test_epoch_order_is_the_nth_draw_of_one_seeded_generator():
    gen = torch.Generator().manual_seed(7)
    draws = [torch.randperm(10, generator=gen).tolist() for _ in range(3)]
    assert [epoch_order(7, e, 10) for e in (1, 2, 3)] == draws
    assert epoch_order(7, 2, 10) != epoch_order(7, 1, 10)


def _cfg(*overrides: str):
    return load_config("configs/tiny.yaml", list(overrides))


def test_only_torch_on_cpu_trains_in_the_driver():
    cfg = _cfg()
    assert trains_in_driver(cfg, cfg.reward.train)  # tiny: backend torch on the CPU
    ds = _cfg("reward.train.backend=deepspeed", "reward.train.zero_stage=2")
    assert not trains_in_driver(ds, ds.reward.train)


def test_stage_ranks_and_resources():
    cfg = _cfg("sft.train.backend=deepspeed", "sft.train.zero_stage=3", "sft.train.micro_batch_size=4")
    assert stage_ranks(cfg, "sft", cfg.sft.train) == 2  # tiny's cluster.policy.num_actors
    assert stage_ranks(cfg, "rm", cfg.reward.train) == 1  # backend torch: one rank
    assert stage_overrides(cfg, "sft", cfg.sft.train) == {"cluster.policy.num_actors": 2,
                                                          "cluster.policy.gpus_per_actor": 0.0}
    gpu = load_config("configs/llama8b-1node-8gpu.yaml", [])
    # on CUDA a stage's rank gets a whole GPU, not the role's PPO share (reward: 0.2 GPU in PPO)
    assert stage_overrides(gpu, "rm", gpu.reward.train) == {"cluster.reward.num_actors": 8,
                                                            "cluster.reward.gpus_per_actor": 1.0}
    assert not trains_in_driver(gpu, gpu.sft.train) and not trains_in_driver(gpu, gpu.reward.train)


def test_batch_rule_counts_the_stage_ranks():
    from rlhf_dist.config import ConfigError

    with pytest.raises(ConfigError, match=r"sft.train.global_batch_size \(8\).*x data-parallel size \(2\)"):
        _cfg("sft.train.backend=deepspeed", "sft.train.zero_stage=2", "sft.train.micro_batch_size=8")
