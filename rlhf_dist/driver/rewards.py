"""The step's scores: every ppo.rewards source (rewards/registry.py) asked in turn, summed by weight.

Failures are loud: each source names the sample or the URL that failed (RewardError)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhf_dist.config import RewardSource
from rlhf_dist.rewards import REWARD_SOURCES, RewardCall, RewardError

__all__ = ["RewardError", "combine_rewards"]


def combine_rewards(
    sources: list[RewardSource], prompts: list[str], responses: list[str],
    model_scores: Callable[[], list[float]] | None, response_tokens: list[int] | None = None,
    max_response_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over sources -> scores [B], plus the mean of each source for logging (reward/<source name><i>).
    `response_tokens` (each response's token count) and `max_response_tokens` (the cap) are for length-aware
    sources ('overlong')."""
    call = RewardCall(prompts, responses, model_scores, response_tokens, max_response_tokens)
    total = torch.zeros(len(prompts))
    means: dict[str, float] = {}
    for i, src in enumerate(sources):
        entry = REWARD_SOURCES.get(src.kind)
        part = torch.tensor(entry.fn(src, call), dtype=torch.float32)
        means[f"reward/{entry.name}{i}"] = float(part.mean())
        total += src.weight * part
    return total, means
