"""DAPO's overlong reward shaping as a reward source: a length penalty over the last tokens before the cap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.rewards.registry import REWARD_SOURCES, RewardCall, RewardError

if TYPE_CHECKING:
    from rlhf_dist.config.schema import RewardSource


@REWARD_SOURCES.register("overlong", requires=("buffer_tokens",))
def overlong(src: RewardSource, call: RewardCall) -> list[float]:
    """DAPO's soft overlong punishment (Yu et al. 2025): 0 up to L_max - buffer_tokens response tokens, then
    linear down to -1 at the cap L_max = rollout.sampling.max_new_tokens (-1 for a response cut off there);
    weight = the penalty factor. Listed next to the task's reward, it is summed into the score before
    advantages (and dynamic sampling's group filter)."""
    # torch-free module (the schema reads it); the tensor math loads on the first call, in the driver
    import torch

    from rlhf_dist.algo.rewards import overlong_penalty

    if call.response_tokens is None or call.max_response_tokens is None:
        raise RewardError("an 'overlong' reward source needs the responses' token lengths and the length cap")
    lengths = torch.tensor(call.response_tokens, dtype=torch.long)
    return overlong_penalty(lengths, call.max_response_tokens, src.buffer_tokens).tolist()
