"""Held-out evaluation on the cluster (eval.placement 'cluster', or 'auto' on CUDA): the driver holds
no model.

    with ClusterEval(cfg, policy_dir, start_dir, reward_dir) as models:
        policy_samples, start_samples = models.sample(prompt_ids)       # rollout engines, eval.seed for both
        logprobs, entropy, ref_logprobs = models.logprobs(inputs)       # [B, R] each, frozen copies
        scores = models.scores(prompts, texts)                          # reward actors
        answers = models.pair_answers(pairs, pad_id)                    # held-out RM accuracy

Every group is placed on its role's resources (cluster.rollout, cluster.reference, cluster.reward) and
loads at once; all are removed on exit, failed or not. eval/evaluate.py has the in-process twin.
"""

from __future__ import annotations

from pathlib import Path

import ray
import torch

from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.config.topology import actor_count
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.driver.actors import start_ray
from rlhf_dist.workers.evaluation import EvalRewardGroup, PolicySamplers, PolicyScorers, StartSamplers, StartScorers
from rlhf_dist.workers.group import ActorGroup, Placement, create_role_placement, remove_placements


class ClusterEval:
    """Evaluation's models on Ray groups (see the module docstring)."""

    def __init__(self, cfg: RLHFConfig, policy_dir: Path, start_dir: Path, reward_dir: Path | None):
        # one response per prompt; the exported policy is a plain (merged) dir: no adapter to serve
        self.cfg = with_overrides(cfg, {"rollout.sampling.samples_per_prompt": 1, "rollout.lora_sync": "merged"})
        self.started_ray = start_ray(self.cfg)
        self.placements: dict[str, Placement] = {}
        self.groups: list[ActorGroup] = []
        try:
            self.policy_sampler = self._group(PolicySamplers, "rollout", "policy-sampler")
            self.start_sampler = self._group(StartSamplers, "rollout", "start-sampler")
            self.policy_scorer = self._group(PolicyScorers, "reference", "policy-scorer")
            self.start_scorer = self._group(StartScorers, "reference", "start-scorer")
            self.reward = self._group(EvalRewardGroup, "reward", "reward") if reward_dir is not None else None
            loading = [self.policy_sampler.init_model(policy_dir), self.start_sampler.init_model(start_dir),
                       self.policy_scorer.init_model(policy_dir), self.start_scorer.init_model(start_dir)]
            if self.reward is not None:
                loading.append(self.reward.init_model(reward_dir))
            for pending in loading:
                pending.result()
        except BaseException:
            self.close()
            raise

    def _group(self, group_cls: type, role: str, name: str):
        self.placements[name] = create_role_placement(self.cfg, role)
        group = group_cls(self.cfg, self.placements[name], actor_count(self.cfg, role))
        self.groups.append(group)
        return group

    def sample(self, prompt_ids: list[list[int]]) -> tuple[list[RolloutSample], list[RolloutSample]]:
        """One response per prompt from the policy and from its start, both seeded by eval.seed."""
        policy = self.policy_sampler.generate(prompt_ids, self.cfg.eval.seed)
        start = self.start_sampler.generate(prompt_ids, self.cfg.eval.seed)
        return [group[0] for group in policy.result()], [group[0] for group in start.result()]

    def logprobs(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """([B, R] policy log-probs, [B, R] policy entropy, [B, R] start log-probs) of the response tokens."""
        policy = self.policy_scorer.logprobs_and_entropy(inputs)
        start = self.start_scorer.logprobs(inputs)
        logprobs, entropy = policy.result()
        return logprobs, entropy, start.result()

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.reward.score(prompts, responses).result()

    def pair_answers(self, pairs: list, pad_id: int) -> list:
        return self.reward.pair_answers(pairs, pad_id, self.cfg.eval.batch_size).result()

    def close(self) -> None:
        for group in self.groups:
            group.kill()
        remove_placements(self.placements)
        if self.started_ray:
            ray.shutdown()

    def __enter__(self) -> ClusterEval:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()
