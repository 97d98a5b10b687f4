"""Held-out judges for win rates: checkable rules that are NOT the trained reward model.

Why rules: a win rate judged by the reward model PPO optimised against measures how well the
policy exploits that model, not whether it got better. A judge here is a name from `JUDGES` or
any 'module:callable' taking (prompts, responses) -> one float per sample (higher = better).
"""

from __future__ import annotations

import logging

from rlhf_dist.data.text_rules import JUDGES, judge_spec

log = logging.getLogger(__name__)
__all__ = ["JUDGES", "judge_scores", "judge_spec", "trained_on_judge"]


def judge_scores(name: str, prompts: list[str], responses: list[str]) -> list[float]:
    """The judge's score of every (prompt, response); a judge that raises names the failing sample."""
    from rlhf_dist.rewards.sources.python_function import call_function

    return call_function(judge_spec(name), prompts, responses)


def trained_on_judge(name: str, reward_functions: list[str]) -> bool:
    """True when the judge is one of the PPO reward functions (then the win rate is not held-out)."""
    spec = judge_spec(name)
    same = spec in reward_functions
    if same:
        log.warning("eval judge '%s' (%s) is also a PPO reward source: its win rate is not a held-out "
                    "measure; pick another eval.judge", name, spec)
    return same
