"""A Python function of the texts, loaded by name. One that raises is re-run sample by sample to name the
sample that breaks it, so the user can reproduce it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from rlhf_dist.rewards.registry import REWARD_SOURCES, RewardCall, RewardError, checked_rewards

if TYPE_CHECKING:
    from rlhf_dist.config.schema import RewardSource


def load_function(spec: str) -> Callable[[list[str], list[str]], list[float]]:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise RewardError(f"reward function '{spec}' cannot be loaded: {err}") from None


def call_function(spec: str, prompts: list[str], responses: list[str]) -> list[float]:
    """fn(prompts, responses) -> rewards, checked; a raising function is narrowed down to one sample."""
    fn = load_function(spec)
    try:
        return checked_rewards(fn(prompts, responses), len(prompts), f"reward function '{spec}'", prompts)
    except RewardError:
        raise
    except Exception as batch_err:  # find the sample that breaks it
        for i, (p, r) in enumerate(zip(prompts, responses)):
            try:
                fn([p], [r])
            except Exception as err:
                raise RewardError(
                    f"reward function '{spec}' raised on sample {i} (prompt {p[:60]!r}, response {r[:60]!r}): {err!r}"
                ) from err
        raise RewardError(f"reward function '{spec}' raised on the batch: {batch_err!r}") from batch_err


def _module_colon_callable(src: RewardSource) -> str | None:
    return None if src.function and ":" in src.function else "must be 'module:callable' for kind 'function'"


@REWARD_SOURCES.register("function", requires=("function",), check=_module_colon_callable)
def python_function(src: RewardSource, call: RewardCall) -> list[float]:
    """A Python function 'module:callable' taking (prompts, responses) -> list[float], run in the driver."""
    return call_function(src.function, call.prompts, call.responses)
