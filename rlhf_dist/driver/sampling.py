"""Pairs for people sampled on the cluster's rollout engines and ranked by its reward actors: the driver
holds no model.

`feedback generate`, the pipeline's rounds, the service's rounds, human evaluation and the pooling experiment
hand `pair_sampler(cfg)` to feedback/generate.py, and `pair_scorer(cfg)` to feedback/selection.py (the reward
model of feedback.selection uncertainty / disagreement). Where evaluation runs on the cluster (eval.placement
'cluster', or 'auto' on CUDA), so do these: engines on cluster.rollout's resources (rollout.backend,
rollout.num_engines; logs <run>/logs/feedback-rollout-<rank>.log), reward actors on cluster.reward's
(feedback-reward-<rank>.log), removed afterwards. Elsewhere (the one-process CPU default) they are None: the
models load in the driver's process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import ray
import torch

from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.config.schema_parts import SamplingConfig
from rlhf_dist.config.topology import actor_count, evaluates_on_cluster
from rlhf_dist.driver.actors import start_ray
from rlhf_dist.feedback.generate import Sampler
from rlhf_dist.feedback.selection import PairScorer, ScorerFactory
from rlhf_dist.workers.evaluation import PairRankers, PairSamplers
from rlhf_dist.workers.group import create_role_placement, remove_placements
from rlhf_dist.workers.role_groups import RoleGroup


def pair_sampler(cfg: RLHFConfig) -> Sampler | None:
    """The cluster's engines where evaluation runs on the cluster; None: an engine in this process."""
    return partial(sample_on_cluster, cfg) if evaluates_on_cluster(cfg) else None


def sample_on_cluster(cfg: RLHFConfig, model_dir: Path, prompt_ids: list[list[int]], sampling: SamplingConfig,
                      seed: int) -> list[list[RolloutSample]]:
    """Per prompt, sampling.samples_per_prompt samples from engines started on model_dir for this call."""
    # the dirs people judge are plain exported models: no adapter to serve on top
    cfg = with_overrides(cfg, {"rollout.lora_sync": "merged"}, source="pair sampling")
    with _group_on_cluster(cfg, PairSamplers, "rollout", model_dir) as engines:
        return engines.sample(prompt_ids, sampling, seed).result()


@contextmanager
def _group_on_cluster(cfg: RLHFConfig, group_cls: type[RoleGroup], role: str, model_dir: Path) -> Iterator[RoleGroup]:
    """A group of `role`'s actors on its own placement, its models loaded from model_dir, while the block runs."""
    started_ray = start_ray(cfg)
    placement = create_role_placement(cfg, role)
    group = None
    try:
        group = group_cls(cfg, placement, actor_count(cfg, role))
        group.init_model(model_dir).result()
        yield group
    finally:
        if group is not None:
            group.kill()
        remove_placements({role: placement})
        if started_ray:
            ray.shutdown()


def pair_scorer(cfg: RLHFConfig) -> ScorerFactory | None:
    """Reward actors on the cluster where evaluation runs on the cluster; None: the model in this process."""
    return scorer_on_cluster if evaluates_on_cluster(cfg) else None


class _RewardActors:
    def __init__(self, rankers: PairRankers):
        self.rankers = rankers

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.rankers.score(prompts, responses).result()

    def features(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        return self.rankers.features(prompts, responses).result()


@contextmanager
def scorer_on_cluster(cfg: RLHFConfig, reward_dir: Path) -> Iterator[PairScorer]:
    """The reward model at reward_dir on cluster.reward's actors while the block runs."""
    with _group_on_cluster(cfg, PairRankers, "reward", reward_dir) as rankers:
        yield _RewardActors(rankers)
