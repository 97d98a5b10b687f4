"""The reward sources' registry: each source registers itself, with its properties, by decorating its function.
The schema's choices for ppo.rewards[i].kind, the config rules (the fields a source needs, config/checks.py),
whether the run gets reward-model actors (config/topology.py needs_reward_model) and the driver's weighted sum
(driver/rewards.py) all read it, so a new source is ONE file plus its test::

    # rlhf_dist/rewards/sources/my_source.py  (every module of the folder is imported)
    from rlhf_dist.rewards.registry import REWARD_SOURCES, RewardCall

    @REWARD_SOURCES.register("my_source", requires=("url",))
    def my_source(src: RewardSource, call: RewardCall) -> list[float]:
        \"\"\"What it scores and how (the first paragraph is the option's description).\"\"\"

Sources run in the driver, once per step, on the decoded texts; a source with needs_reward_model gets the
reward-model actors' scores through `call.model_scores` (the run then has those actors). Plugins outside the
package are named 'module:function' in the config, as for algo/registry.py (which explains why).
Modules here import neither torch nor anything above config (the schema reads them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import Entry, Registry

if TYPE_CHECKING:
    from rlhf_dist.config.schema import RewardSource


class RewardError(RuntimeError):
    """A reward source failed; the message names the source and the sample."""


@dataclass(frozen=True)
class RewardSourceEntry(Entry):
    """fn(src: RewardSource, call: RewardCall) -> one finite float per sample."""

    needs_reward_model: bool = False  # the run gets reward-model actors; call.model_scores asks them
    requires: tuple[str, ...] = ()  # RewardSource fields that must be set for this kind (config rules)
    # A further check of the source's fields: the problem in words, or None (config rules; no I/O here)
    check: Callable[[RewardSource], str | None] | None = None


@dataclass(frozen=True)
class RewardCall:
    """One step's samples, as a source sees them."""

    prompts: list[str]
    responses: list[str]
    model_scores: Callable[[], list[float]] | None  # the reward-model actors' scores (needs_reward_model)
    response_tokens: list[int] | None = None  # each response's length in generated tokens (eos included)
    max_response_tokens: int | None = None  # the length cap they were generated under (max_new_tokens)


def checked_rewards(values: Sequence, n: int, source: str, prompts: list[str]) -> list[float]:
    """`values` as n finite floats, else RewardError naming the source and the sample."""
    values = list(values)
    if len(values) != n:
        raise RewardError(f"{source} returned {len(values)} rewards for {n} samples")
    for i, v in enumerate(values):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RewardError(f"{source} returned {v!r} for sample {i} (prompt {prompts[i][:60]!r})")
    return [float(v) for v in values]


REWARD_SOURCES: Registry[RewardSourceEntry] = Registry(
    "reward source", "ppo.rewards[i].kind", "REWARD_SOURCES", RewardSourceEntry, home="rlhf_dist.rewards.registry")
