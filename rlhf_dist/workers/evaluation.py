"""Evaluation's actors: held-out generation on rollout engines, log-probs on frozen copies of the
policy and its start, reward scores on reward-model actors (driver/evaluation.py places them).

They are the PPO roles' workers under their own log names (<run>/logs/eval-*-<rank>.log), so an
evaluation after a run never overwrites the run's role logs.
"""

from __future__ import annotations

import torch

from rlhf_dist.data import collate_pairs
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.models.objectives import score_pairs
from rlhf_dist.workers.group import Pending
from rlhf_dist.workers.inference import ReferenceWorker, RewardWorker, RolloutWorker
from rlhf_dist.workers.role_groups import ReferenceGroup, RewardGroup, RolloutGroup, _contiguous


class PolicySampler(RolloutWorker):
    log_name = "eval-rollout-policy"


class StartSampler(RolloutWorker):
    log_name = "eval-rollout-start"


class PolicyScorer(ReferenceWorker):
    log_name = "eval-policy"


class StartScorer(ReferenceWorker):
    log_name = "eval-reference"


class EvalRewardWorker(RewardWorker):
    log_name = "eval-reward"

    @torch.no_grad()
    def pair_answers(self, pairs: list, pad_id: int, batch_size: int) -> list:
        """(chosen scores, rejected scores, targets) per batch of tokenised held-out pairs (stages/reward.py
        preference_metrics turns them into accuracy, tau, margin)."""
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


class ScorerGroup(ReferenceGroup):
    def logprobs_and_entropy(self, inputs: ModelInputs) -> Pending[tuple[torch.Tensor, torch.Tensor]]:
        """([B, R] log-probs, [B, R] entropy) of the response tokens, rank i on shard i."""
        return self.sharded("logprobs_and_entropy", lambda a, part: a.logprobs_and_entropy.remote(part),
                            inputs.shard(self.num_actors),
                            lambda answers: tuple(torch.cat(parts) for parts in zip(*answers)))


class PolicyScorers(ScorerGroup):
    worker = PolicyScorer


class StartScorers(ReferenceGroup):
    worker = StartScorer


class EvalRewardGroup(RewardGroup):
    worker = EvalRewardWorker

    def pair_answers(self, pairs: list, pad_id: int, batch_size: int) -> Pending[list]:
        """Every rank's answers for a contiguous share of the pairs, joined in the pairs' order."""
        return self.sharded("pair_answers", lambda a, part: a.pair_answers.remote(part, pad_id, batch_size),
                            _contiguous(pairs, self.num_actors), lambda answers: [x for part in answers for x in part])
