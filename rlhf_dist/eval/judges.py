"""Held-out judges for win rates: checkable rules that are NOT the trained reward model.

Why rules: a win rate judged by the reward model PPO optimised against measures how well the
policy exploits that model, not whether it got better. A judge here is a name from `JUDGES` or
any 'module:callable' taking (prompts, responses) -> one float per sample (higher = better).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# name -> 'module:callable' of the rule (rlhf_dist/eval/rules.py)
JUDGES: dict[str, str] = {
    "sentiment": "rlhf_dist.eval.rules:sentiment_reward",  # lexicon positivity, the demo task's goal
    "length": "rlhf_dist.eval.rules:length_reward",  # characters / 100 (the reward-hacking target)
    "lowercase": "rlhf_dist.eval.rules:lowercase_fraction_reward",
    "vowel": "rlhf_dist.eval.rules:vowel_fraction_reward",
}


def judge_spec(name: str) -> str:
    """'module:callable' of a registered judge name, or `name` itself when it already is one."""
    if name in JUDGES:
        return JUDGES[name]
    if ":" in name and all(name.partition(":")[::2]):
        return name
    raise ValueError(f"unknown judge '{name}' (known: {', '.join(JUDGES)}, or 'module:callable')")


def judge_scores(name: str, prompts: list[str], responses: list[str]) -> list[float]:
    """The judge's score of every (prompt, response); a judge that raises names the failing sample."""
    from rlhf_dist.driver.rewards import call_function  # torch-heavy; config validation imports this module

    return call_function(judge_spec(name), prompts, responses)


def trained_on_judge(name: str, reward_functions: list[str]) -> bool:
    """True when the judge is one of the PPO reward functions (then the win rate is not held-out)."""
    spec = judge_spec(name)
    same = spec in reward_functions
    if same:
        log.warning("eval judge '%s' (%s) is also a PPO reward source: its win rate is not a held-out "
                    "measure; pick another eval.judge", name, spec)
    return same
