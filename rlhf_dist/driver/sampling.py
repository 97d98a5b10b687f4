"""Pairs for people sampled on the cluster's rollout engines: the driver holds no model.

`feedback generate`, the pipeline's rounds, the service's rounds, human evaluation and the pooling experiment
hand `pair_sampler(cfg)` to feedback/generate.py. Where evaluation runs on the cluster (eval.placement
'cluster', or 'auto' on CUDA), so does this sampling: engines on cluster.rollout's resources
(rollout.backend, rollout.num_engines), logs in <run>/logs/feedback-rollout-<rank>.log, removed afterwards.
Elsewhere (the one-process CPU default) it is None: one engine in the driver's process.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import ray

from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.config.schema_parts import SamplingConfig
from rlhf_dist.config.topology import actor_count, evaluates_on_cluster
from rlhf_dist.driver.actors import start_ray
from rlhf_dist.feedback.generate import Sampler
from rlhf_dist.workers.evaluation import PairSamplers
from rlhf_dist.workers.group import create_role_placement, remove_placements


def pair_sampler(cfg: RLHFConfig) -> Sampler | None:
    """The cluster's engines where evaluation runs on the cluster; None: an engine in this process."""
    return partial(sample_on_cluster, cfg) if evaluates_on_cluster(cfg) else None


def sample_on_cluster(cfg: RLHFConfig, model_dir: Path, prompt_ids: list[list[int]], sampling: SamplingConfig,
                      seed: int) -> list[list[RolloutSample]]:
    """Per prompt, sampling.samples_per_prompt samples from engines started on model_dir for this call."""
    # the dirs people judge are plain exported models: no adapter to serve on top
    cfg = with_overrides(cfg, {"rollout.lora_sync": "merged"}, source="pair sampling")
    started_ray = start_ray(cfg)
    placement = create_role_placement(cfg, "rollout")
    engines = None
    try:
        engines = PairSamplers(cfg, placement, actor_count(cfg, "rollout"))
        engines.init_model(model_dir).result()
        return engines.sample(prompt_ids, sampling, seed).result()
    finally:
        if engines is not None:
            engines.kill()
        remove_placements({"rollout": placement})
        if started_ray:
            ray.shutdown()
