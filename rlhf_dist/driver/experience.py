"""From scores and log-probs to advantages: the algo/ functions composed as config says."""

from __future__ import annotations

import torch

from rlhf_dist.algo import (
    RunningMeanStd,
    clip_rewards,
    kl_penalized_rewards,
    masked_mean,
    masked_sum,
    truncated_is_weights,
)
from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs
from rlhf_dist.config import PPOConfig
from rlhf_dist.data.experience import Experience, InferenceOutputs, RolloutBatch


def make_experience(
    cfg: PPOConfig, batch: RolloutBatch, inference: InferenceOutputs, raw_scores: torch.Tensor,
    kl_coef: float, reward_norm: RunningMeanStd, group_size: int,
) -> tuple[Experience, dict[str, float]]:
    """Scores [B] + log-probs/values [B, R] -> Experience with advantages and returns [B, R]."""
    mask = batch.inputs.action_mask  # [B, R]
    scores = clip_rewards(raw_scores, cfg.reward_clip)  # [B]
    if cfg.reward_normalize:
        reward_norm.update(scores)
        scores = reward_norm.normalize(scores)
    old_lp, ref_lp, values = inference.old_logprobs, inference.ref_logprobs, inference.values  # [B, R] each
    rewards, kl = kl_penalized_rewards(scores, old_lp, ref_lp, mask, kl_coef, cfg.kl.estimator)  # [B, R] each
    # Group estimators compare whole sequences: the KL penalty enters the sequence reward.
    seq_reward = scores - kl_coef * masked_sum(kl, mask, dim=1)  # [B]
    inputs = AdvantageInputs(scores, rewards, seq_reward, values, mask, group_size, cfg.gamma, cfg.lam,
                             cfg.whiten_advantages)
    advantages, returns = ADVANTAGES.get(cfg.advantage).fn(inputs)  # the registered estimator, [B, R] each
    exp = Experience(batch.inputs.sequences, batch.inputs.attention_mask, mask, old_lp, ref_lp, values, rewards,
                     advantages, returns, scores, batch.rollout_logprobs)
    seq_kl = masked_sum(old_lp - ref_lp, mask, dim=1)  # [B] k1 summed over the response
    stats = {
        "reward/score_raw": float(raw_scores.mean()),
        "reward/score": float(scores.mean()),
        "kl/seq_k1": float(seq_kl.mean()),
        "kl/coef": kl_coef,
        "response/length": float(mask.sum(1).mean()),
        "advantage/mean": float(masked_mean(advantages, mask)),
        "rollout/logprob_abs_diff": float(masked_mean((old_lp - batch.rollout_logprobs).abs(), mask)),
    }
    if cfg.old_logprobs == "recompute":
        # Whole-batch statistics of the weights the policy loss applies per micro-batch (PolicyWorker._loss).
        _, is_stats = truncated_is_weights(old_lp, batch.rollout_logprobs, mask, cfg.tis_cap, cfg.tis_level)
        stats.update({f"offpolicy/{k}": float(v) for k, v in is_stats.items()})
        # Engine vs trainer parity of the synced weights (bench/gpu_check asserts it from step 2 on); with
        # ppo.max_staleness > 0 it includes the staleness. 'rollout' old log-probs are the engine's: 0 by definition.
        gap = torch.where(mask.bool(), (old_lp - batch.rollout_logprobs).abs(), 0.0)
        stats["rollout/logprob_max_abs_diff"] = float(gap.max()) if gap.numel() else 0.0
    return exp, stats
