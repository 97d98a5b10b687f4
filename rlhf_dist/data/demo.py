"""Built-in, seeded demo data: "give positive, helpful answers".

Everything here is generated from small phrase banks, so demos and tests
need no download and the same seed always yields the same data.  The
:func:`sentiment_score` lexicon rule is a checkable stand-in for a reward
model or judge: every demo pair is built so that it prefers ``chosen``.
Held-out files (``eval_*``) use topics never seen in training.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Literal

from rlhf_dist.data.readers import write_jsonl
from rlhf_dist.data.records import ABFeedback, PreferencePair, PromptOnly, RankedList, Rating, SFTExample

Split = Literal["train", "eval"]

TOPICS = [
    "the new cafe", "this laptop", "the museum", "the city library", "the train ride", "the hotel",
    "the concert", "this phone", "the bakery", "the hiking trail", "the science fair", "the bookstore",
    "the yoga class", "this backpack", "the farmers market", "the art gallery", "the pizza place",
    "the cooking course", "this headset", "the aquarium", "the bike tour", "the theater show",
    "the coffee machine", "the local zoo", "the board game", "the beach resort", "the sushi bar",
    "this textbook", "the podcast", "the garden center", "the ferry trip", "the piano lesson",
    # Held out for evaluation: never used by the training split.
    "the ski lodge", "the food truck", "this tablet", "the botanical garden",
    "the jazz club", "the pottery workshop", "the night market", "this smartwatch",
]
N_TRAIN_TOPICS = 32

PROMPT_TEMPLATES = [
    "Write a short review of {topic}.",
    "What do you think of {topic}?",
    "Describe your experience with {topic}.",
    "Tell a friend about {topic}.",
    "Give your honest opinion of {topic}.",
    "How was {topic}?",
    "Share a few thoughts about {topic}.",
    "Would you recommend {topic}?",
]

POSITIVE = [
    "I loved {topic}, it was wonderful and friendly.",
    "{topic} was excellent and I would happily recommend it.",
    "Honestly, {topic} is delightful and a real pleasure.",
    "{topic} exceeded my expectations and everything felt great.",
    "What a fantastic experience {topic} was, warm and welcoming.",
    "{topic} is brilliant, helpful and fun.",
    "I enjoyed every moment of {topic}, it was great.",
    "{topic} made me happy, and the details were lovely.",
]
NEGATIVE = [
    "{topic} was awful and boring.",
    "I hated {topic}; it was a terrible waste of time.",
    "{topic} was disappointing, rude and dull.",
    "Honestly, {topic} is horrible and I regret it.",
    "{topic} felt cheap, broken and annoying.",
    "What a miserable, dull experience {topic} was.",
    "{topic} is bad and overpriced, and I would not go back.",
    "{topic} left me frustrated and unhappy.",
]
# Lexicon invariant the tests rely on: strong phrases hold >= 2 sentiment words,
# mild ones exactly 1, so the rule ranks strong > mild > 0 > mild > strong.
# Mild (hard-case) responses use a single phrase to keep that order.
MILD_POSITIVE = [
    "{topic} was decent, with a few touches I liked.",
    "{topic} was fine overall and the staff were pleasant.",
    "I think {topic} is good value for the price.",
    "{topic} was okay, and parts of it were charming.",
]
MILD_NEGATIVE = [
    "{topic} was okay, but mostly forgettable.",
    "{topic} was a little slow.",
    "I think {topic} is mediocre for the price.",
    "{topic} was fine at first, then rather tedious.",
]
NEUTRAL_DETAILS = [
    "I went there last week.",
    "It took about an hour.",
    "My sister came along too.",
    "We visited on a Tuesday afternoon.",
    "I used it for a few days.",
]

POSITIVE_WORDS = frozenset(
    "loved love wonderful friendly excellent happily recommend delightful pleasure great fantastic warm "
    "welcoming brilliant helpful fun enjoyed enjoy happy lovely decent nice pleasant good charming "
    "exceeded amazing beautiful kind best perfect".split()
)
NEGATIVE_WORDS = frozenset(
    "awful boring hated hate terrible waste disappointing rude dull horrible regret cheap broken annoying "
    "miserable bad overpriced frustrated unhappy forgettable slow bland mediocre tedious poor worst ugly sad".split()
)
NEGATIONS = frozenset({"not", "never", "no", "hardly"})


def sentiment_score(text: str) -> float:
    """Lexicon sentiment in (-1, 1): ``(pos - neg) / (pos + neg + 1)``.

    A word right after a negation ("not good") counts with flipped sign.  The
    ``+ 1`` makes more sentiment words score higher but saturate, which keeps
    the rule hard to game by repetition.
    """
    pos = neg = 0
    negate = False
    for word in re.findall(r"[a-z']+", text.lower()):
        sign = 1 if word in POSITIVE_WORDS else -1 if word in NEGATIVE_WORDS else 0
        if negate:
            sign = -sign
        pos += sign > 0
        neg += sign < 0
        negate = word in NEGATIONS or word.endswith("n't")
    return (pos - neg) / (pos + neg + 1)


def _rng(kind: str, seed: int) -> random.Random:
    # String seeds are hashed deterministically, and each kind gets its own stream.
    return random.Random(f"rlhf_dist.demo:{kind}:{seed}")


def _topics(split: Split) -> list[str]:
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    return TOPICS[:N_TRAIN_TOPICS] if split == "train" else TOPICS[N_TRAIN_TOPICS:]


def _sentence(template: str, topic: str) -> str:
    text = template.format(topic=topic)
    return text[0].upper() + text[1:]


def _prompt(rng: random.Random, split: Split) -> tuple[str, str]:
    topic = rng.choice(_topics(split))
    return topic, _sentence(rng.choice(PROMPT_TEMPLATES), topic)


def _response(rng: random.Random, bank: list[str], topic: str) -> str:
    """Distinct phrases from ``bank`` (one for mild banks), sometimes with a neutral detail."""
    max_phrases = 2 if bank is POSITIVE or bank is NEGATIVE else 1
    parts = [_sentence(t, topic) for t in rng.sample(bank, rng.randint(1, max_phrases))]
    if rng.random() < 0.4:
        parts.insert(rng.randint(0, len(parts)), rng.choice(NEUTRAL_DETAILS))
    return " ".join(parts)


def demo_prompts(n: int, seed: int = 0, split: Split = "train") -> list[PromptOnly]:
    """``n`` prompts asking for an opinion about a topic."""
    rng = _rng("prompts", seed)
    return [PromptOnly(prompt=_prompt(rng, split)[1]) for _ in range(n)]


def demo_sft(n: int, seed: int = 0, split: Split = "train") -> list[SFTExample]:
    """``n`` prompts with positive demonstration responses."""
    rng = _rng("sft", seed)
    out = []
    for _ in range(n):
        topic, prompt = _prompt(rng, split)
        out.append(SFTExample(prompt=prompt, response=_response(rng, POSITIVE, topic)))
    return out


def demo_pairs(n: int, seed: int = 0, split: Split = "train", hard_fraction: float = 0.2) -> list[PreferencePair]:
    """``n`` pairs: positive ``chosen`` vs negative ``rejected``; ``hard_fraction`` use mild wording."""
    rng = _rng("pairs", seed)
    out = []
    for _ in range(n):
        topic, prompt = _prompt(rng, split)
        good, bad = (MILD_POSITIVE, MILD_NEGATIVE) if rng.random() < hard_fraction else (POSITIVE, NEGATIVE)
        chosen, rejected = _response(rng, good, topic), _response(rng, bad, topic)
        out.append(PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected))
    return out


def demo_ab_feedback(n: int, seed: int = 0, split: Split = "train") -> list[ABFeedback]:
    """``n`` A/B judgements: ~70% clear (high confidence), ~15% hard, ~15% ties (low confidence)."""
    rng = _rng("ab", seed)
    out = []
    for _ in range(n):
        topic, prompt = _prompt(rng, split)
        case = rng.random()
        if case < 0.15:  # tie: two responses of the same quality
            bank = rng.choice([POSITIVE, NEGATIVE])
            a, b, pref, conf = _response(rng, bank, topic), _response(rng, bank, topic), 2, rng.uniform(0.3, 0.6)
            reasoning = "Both responses are similar in tone."
        else:
            hard = case < 0.3  # mild wording on both sides, judged with less confidence
            good, bad, lo, hi = (MILD_POSITIVE, MILD_NEGATIVE, 0.4, 0.7) if hard else (POSITIVE, NEGATIVE, 0.8, 1.0)
            winner, loser = _response(rng, good, topic), _response(rng, bad, topic)
            pref, conf = rng.randint(0, 1), rng.uniform(lo, hi)
            a, b = (winner, loser) if pref == 0 else (loser, winner)
            reasoning = f"Response {'AB'[pref]} is more positive and helpful."
        out.append(ABFeedback(prompt=prompt, response_a=a, response_b=b, preference=pref,
                              confidence=round(conf, 2), reasoning=reasoning))
    return out


def demo_ranked(n: int, seed: int = 0, split: Split = "train") -> list[RankedList]:
    """``n`` ranked lists of 3-4 responses (positive > mild positive > mild negative > negative)."""
    rng = _rng("ranked", seed)
    banks = [POSITIVE, MILD_POSITIVE, MILD_NEGATIVE, NEGATIVE]
    out = []
    for _ in range(n):
        topic, prompt = _prompt(rng, split)
        levels = sorted(rng.sample(range(4), rng.randint(3, 4)))
        tie_top = len(levels) == 4 and rng.random() < 0.25  # two strong positives share rank 0
        levels = [0, 0] + levels[2:] if tie_top else levels
        items = [(_response(rng, banks[lv], topic), lv) for lv in levels]
        rng.shuffle(items)
        # Competition ranking: a response's rank is how many responses are strictly better.
        ranking = [sum(o < lv for _, o in items) for _, lv in items]
        out.append(RankedList(prompt=prompt, responses=[r for r, _ in items], ranking=ranking))
    return out


def demo_ratings(n: int, seed: int = 0, split: Split = "train") -> list[Rating]:
    """``n`` ratings on a 0-10 scale, in groups of 3 responses per prompt."""
    rng = _rng("ratings", seed)
    levels = [(POSITIVE, 7.0, 10.0), (MILD_POSITIVE, 4.5, 6.5), (MILD_NEGATIVE, 2.5, 4.5), (NEGATIVE, 0.0, 2.5)]
    out: list[Rating] = []
    while len(out) < n:
        topic, prompt = _prompt(rng, split)
        for bank, lo, hi in rng.sample(levels, 3):
            reward = round(rng.uniform(lo, hi), 1)
            out.append(Rating(prompt=prompt, response=_response(rng, bank, topic), reward=reward))
    return out[:n]


def write_demo_files(out_dir: str | Path, n: int = 256, seed: int = 0, n_eval: int | None = None) -> dict[str, Path]:
    """Write every demo dataset as JSONL under ``out_dir``; returns ``{name: path}``.

    ``eval_pairs``/``eval_prompts`` (``n_eval`` rows, default ``max(16, n // 4)``)
    use topics disjoint from the training files.
    """
    out_dir = Path(out_dir)
    n_eval = max(16, n // 4) if n_eval is None else n_eval
    datasets = {
        "sft": demo_sft(n, seed),
        "pairs": demo_pairs(n, seed),
        "ab": demo_ab_feedback(n, seed),
        "ranked": demo_ranked(n, seed),
        "ratings": demo_ratings(n, seed),
        "prompts": demo_prompts(n, seed),
        "eval_pairs": demo_pairs(n_eval, seed, split="eval"),
        "eval_prompts": demo_prompts(n_eval, seed, split="eval"),
    }
    return {name: write_jsonl(out_dir / f"{name}.jsonl", rows) for name, rows in datasets.items()}
