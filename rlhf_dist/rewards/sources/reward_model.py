"""The trained reward model, served by the reward-model actors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.rewards.registry import REWARD_SOURCES, RewardCall, RewardError, checked_rewards

if TYPE_CHECKING:
    from rlhf_dist.config.schema import RewardSource


@REWARD_SOURCES.register("model", needs_reward_model=True)
def reward_model(src: RewardSource, call: RewardCall) -> list[float]:
    """The trained reward model's scalar score (reward-model actors; reward_model.path or the rm stage)."""
    if call.model_scores is None:
        raise RewardError("a 'model' reward source needs a reward model")
    return checked_rewards(call.model_scores(), len(call.prompts), "reward model", call.prompts)
