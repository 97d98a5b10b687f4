"""A simulated annotator: judges two responses with a rule, with seeded noise and ties.

Stands in for people in demos, tests and iterative rounds; its judgements go through the
same FeedbackStore as human ones.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from rlhf_dist.data.text_rules import TEXT_RULES



class SimulatedAnnotator:
    def __init__(self, rule: str = "sentiment", noise: float = 0.0, tie_margin: float = 0.0, seed: int = 0,
                 tie_rate: float = 0.0):
        if rule not in TEXT_RULES:
            raise ValueError(f"unknown annotator rule '{rule}' (known: {', '.join(TEXT_RULES)})")
        self.rule, self.score = rule, TEXT_RULES[rule]
        self.noise, self.tie_margin, self.tie_rate = noise, tie_margin, tie_rate
        self.rng = random.Random(seed)

    def judge(self, prompt: str, response_a: str, response_b: str) -> tuple[int, float, str]:
        """(preference 0=A/1=B/2=tie, confidence in [0.5, 1], reasoning).

        A tie when the rule's scores are within tie_margin, or (probability tie_rate) whatever they are.
        """
        if self.tie_rate and self.rng.random() < self.tie_rate:
            return 2, 0.55, f"{self.rule}: answered tie (tie rate {self.tie_rate})"
        a, b = self.score(response_a), self.score(response_b)
        diff = a - b
        if abs(diff) <= self.tie_margin:
            return 2, 0.5, f"{self.rule}: A {a:.2f} vs B {b:.2f}: too close to call"
        preference = 0 if diff > 0 else 1
        flipped = self.rng.random() < self.noise
        if flipped:
            preference = 1 - preference
        confidence = 0.5 + 0.5 * math.tanh(4 * abs(diff))
        reason = f"{self.rule}: A {a:.2f} vs B {b:.2f}" + (" (noisy)" if flipped else "")
        return preference, round(confidence, 3), reason


def http_judge(rule: str, noise: float, tie_margin: float, tie_rate: float, position_bias: float,
               seed: int) -> Callable[[str, str, str], tuple[str, float]]:
    """A judge for HTTPAnnotator: the rule annotator plus a tie rate and a bias towards the left side.

    position_bias: probability of answering 'left' whatever the texts say; tie_rate: probability of
    answering 'tie'. Otherwise the rule decides (with `noise` flips), as SimulatedAnnotator does.
    """
    annotator = SimulatedAnnotator(rule, noise, tie_margin, seed)
    rng = random.Random(seed + 7919)

    def judge(prompt: str, left: str, right: str) -> tuple[str, float]:
        draw = rng.random()
        if draw < tie_rate:
            return "tie", 0.55
        if draw < tie_rate + position_bias:
            return "left", 0.7
        preference, confidence, _reason = annotator.judge(prompt, left, right)
        return ("left", "right", "tie")[preference], confidence

    return judge
