"""Evaluation's actors: held-out generation on rollout engines, log-probs on frozen copies of the
policy and its start, reward scores on reward-model actors (driver/evaluation.py places them); the engines
that sample pairs for people and the reward actors that rank them (driver/sampling.py).

They are the PPO roles' workers under their own log names (<run>/logs/eval-*-<rank>.log), so an
evaluation after a run never overwrites the run's role logs.
"""

from __future__ import annotations

import torch

from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.config.schema_parts import SamplingConfig
from rlhf_dist.data import collate_pairs
from rlhf_dist.models.objectives import score_pairs
from rlhf_dist.models.reward_scoring import pooled_features
from rlhf_dist.workers.dispatch import Dispatch, Gather, dispatch
from rlhf_dist.workers.inference import ReferenceWorker, RewardWorker, RolloutWorker
from rlhf_dist.workers.role_groups import ReferenceGroup, RewardGroup, RolloutGroup


class PolicySampler(RolloutWorker):
    log_name = "eval-rollout-policy"


class StartSampler(RolloutWorker):
    log_name = "eval-rollout-start"


class PairSampler(RolloutWorker):
    log_name = "feedback-rollout"

    @dispatch(Dispatch.SHARD_LIST, gather=Gather.FLATTEN)
    def sample(self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int) -> list[list[RolloutSample]]:
        """Per prompt, sampling.samples_per_prompt samples, in prompt order (a contiguous chunk per engine).
        Engine e samples with seed + e: one engine draws what an engine in the driver draws with that seed."""
        return self.engine.generate(prompt_ids, sampling, seed + self.rank)


class PairRanker(RewardWorker):
    log_name = "feedback-reward"

    @dispatch(Dispatch.SHARD_LIST, gather=Gather.CONCAT, shard=("prompts", "responses"))
    def features(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """[N, H] the reward model's pooled backbone features (feedback.selection disagreement), a contiguous
        share of the texts per rank."""
        return pooled_features(self.model, self.tokenizer, prompts, responses, self.cfg.data.max_length,
                               self.device, self.cfg.reward_model.score_batch_size).cpu()


class PolicyScorer(ReferenceWorker):
    log_name = "eval-policy"


class StartScorer(ReferenceWorker):
    log_name = "eval-reference"


class EvalRewardWorker(RewardWorker):
    log_name = "eval-reward"

    @dispatch(Dispatch.SHARD_LIST, gather=Gather.FLATTEN, shard=("pairs",))
    @torch.no_grad()
    def pair_answers(self, pairs: list, pad_id: int, batch_size: int) -> list:
        """(chosen scores, rejected scores, targets) per batch of tokenised held-out pairs (stages/reward.py
        preference_metrics turns them into accuracy, tau, margin); a contiguous share of the pairs per rank."""
        answers = []
        for i in range(0, len(pairs), batch_size):
            batch = {k: v.to(self.device) for k, v in collate_pairs(pairs[i : i + batch_size], pad_id).items()}
            chosen, rejected = score_pairs(self.model, batch)
            answers.append((chosen.float().cpu(), rejected.float().cpu(), batch["target"].cpu()))
        return answers


class PolicySamplers(RolloutGroup):
    worker = PolicySampler


class StartSamplers(RolloutGroup):
    worker = StartSampler


class PairSamplers(RolloutGroup):
    worker = PairSampler


class PairRankers(RewardGroup):
    worker = PairRanker


class PolicyScorers(ReferenceGroup):
    worker = PolicyScorer


class StartScorers(ReferenceGroup):
    worker = StartScorer


class EvalRewardGroup(RewardGroup):
    worker = EvalRewardWorker
