"""Reward sources for PPO (ppo.rewards[i].kind): where a sequence's score comes from.

Importing the package registers the built-ins (sources/: the reward-model actors, a Python function, an HTTP
endpoint) without importing torch, so the config schema can read their names and properties.
"""

from rlhf_dist.rewards import sources  # noqa: F401  (they register themselves)
from rlhf_dist.rewards.registry import REWARD_SOURCES, RewardCall, RewardError, RewardSourceEntry

__all__ = ["REWARD_SOURCES", "RewardCall", "RewardError", "RewardSourceEntry"]
