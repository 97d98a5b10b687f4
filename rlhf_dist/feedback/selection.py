"""Which generated pairs people see first (feedback.selection), as queue ranks (lower = sooner).

random: a seeded shuffle. uncertainty: the current reward model's |P(A > B) - 0.5|. disagreement:
the spread of P(A > B) over bootstrap-fit linear heads on the reward model's own features, trained
on every vote collected so far.

The reward model runs where a `ScorerFactory` given by the caller puts it (driver/sampling.py pair_scorer:
reward actors on the cluster where evaluation runs there), else in this process (scorer_in_process).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import torch

from rlhf_dist.algo.selection import (
    bt_probability,
    disagreement_rank,
    fit_bt_heads,
    uncertainty_rank,
)
from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.records import ABFeedback, ComparisonPair

log = logging.getLogger(__name__)
ENSEMBLE_HEADS = 5
MIN_LABELLED_FOR_ENSEMBLE = 8
TARGET_OF = {0: 1.0, 1: 0.0, 2: 0.5}


class PairScorer(Protocol):
    """A loaded reward model: scalar scores and pooled features of (prompt, response) texts."""

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]: ...

    def features(self, prompts: list[str], responses: list[str]) -> torch.Tensor: ...  # [N, H]


ScorerFactory = Callable[[RLHFConfig, Path], AbstractContextManager[PairScorer]]


class _LoadedRewardModel:
    def __init__(self, cfg: RLHFConfig, reward_dir: Path):
        from rlhf_dist.models import load_reward_model, load_tokenizer

        self.model = load_reward_model(cfg.reward_model, reward_dir, trainable=False).eval()
        self.tokenizer = load_tokenizer(reward_dir)
        self.length, self.batch = cfg.data.max_length, cfg.reward_model.score_batch_size

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        from rlhf_dist.models.reward_scoring import score_texts

        return score_texts(self.model, self.tokenizer, prompts, responses, self.length, batch_size=self.batch)

    def features(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        from rlhf_dist.models.reward_scoring import pooled_features

        return pooled_features(self.model, self.tokenizer, prompts, responses, self.length, batch_size=self.batch)


@contextmanager
def scorer_in_process(cfg: RLHFConfig, reward_dir: Path) -> Iterator[PairScorer]:
    """The reward model loaded in this process (a one-process CPU run)."""
    with torch.no_grad():
        yield _LoadedRewardModel(cfg, reward_dir)


def selection_ranks(cfg: RLHFConfig, pairs: Sequence[ComparisonPair], reward_dir: Path | None,
                    labelled: Sequence[ABFeedback] = (), scorer: ScorerFactory | None = None) -> list[float]:
    """Queue ranks of `pairs` by feedback.selection; the reward model runs where `scorer` puts it (None: here)."""
    strategy = cfg.feedback.selection
    if strategy != "random" and reward_dir is None:
        log.warning("feedback.selection=%s needs a trained reward model; this round's pairs go out in random "
                    "order", strategy)
        strategy = "random"
    if strategy == "disagreement" and len(labelled) < MIN_LABELLED_FOR_ENSEMBLE:
        log.warning("feedback.selection=disagreement needs >= %d votes to fit its ensemble (have %d); using "
                    "uncertainty this round", MIN_LABELLED_FOR_ENSEMBLE, len(labelled))
        strategy = "uncertainty"
    if strategy == "random":
        rng = random.Random(cfg.run.seed)
        return [rng.random() for _ in pairs]
    prompts = [p.prompt for p in pairs]
    with (scorer or scorer_in_process)(cfg, reward_dir) as rm:
        if strategy == "uncertainty":
            score_a = torch.tensor(rm.scores(prompts, [p.response_a for p in pairs]))
            score_b = torch.tensor(rm.scores(prompts, [p.response_b for p in pairs]))
            return uncertainty_rank(bt_probability(score_a, score_b)).tolist()

        def diff(rows: Sequence[ABFeedback | ComparisonPair]) -> torch.Tensor:  # [N, H]
            ps = [r.prompt for r in rows]
            return rm.features(ps, [r.response_a for r in rows]) - rm.features(ps, [r.response_b for r in rows])

        train, candidates = diff(labelled), diff(pairs)
    scale = train.std(dim=0).clamp(min=1e-6)
    target = torch.tensor([TARGET_OF[r.preference] for r in labelled])
    heads = fit_bt_heads(train / scale, target, ENSEMBLE_HEADS, seed=cfg.run.seed)
    return disagreement_rank(heads, candidates / scale).tolist()
