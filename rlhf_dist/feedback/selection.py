"""Which generated pairs people see first (feedback.selection), as queue ranks (lower = sooner).

random: a seeded shuffle. uncertainty: the current reward model's |P(A > B) - 0.5|. disagreement:
the spread of P(A > B) over bootstrap-fit linear heads on the reward model's own features, trained
on every vote collected so far.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

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


def selection_ranks(cfg: RLHFConfig, pairs: Sequence[ComparisonPair], reward_dir: Path | None,
                    labelled: Sequence[ABFeedback] = ()) -> list[float]:
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
    from rlhf_dist.models import load_reward_model, load_tokenizer
    from rlhf_dist.models.reward_scoring import pooled_features, score_texts

    model = load_reward_model(cfg.reward_model, reward_dir, trainable=False).eval()
    tokenizer = load_tokenizer(reward_dir)
    prompts = [p.prompt for p in pairs]
    length = cfg.data.max_length
    if strategy == "uncertainty":
        score_a = torch.tensor(score_texts(model, tokenizer, prompts, [p.response_a for p in pairs], length))
        score_b = torch.tensor(score_texts(model, tokenizer, prompts, [p.response_b for p in pairs], length))
        return uncertainty_rank(bt_probability(score_a, score_b)).tolist()

    def diff(rows: Sequence[ABFeedback | ComparisonPair]) -> torch.Tensor:  # [N, H]
        ps = [r.prompt for r in rows]
        return (pooled_features(model, tokenizer, ps, [r.response_a for r in rows], length)
                - pooled_features(model, tokenizer, ps, [r.response_b for r in rows], length))

    train, candidates = diff(labelled), diff(pairs)
    scale = train.std(dim=0).clamp(min=1e-6)
    target = torch.tensor([TARGET_OF[r.preference] for r in labelled])
    heads = fit_bt_heads(train / scale, target, ENSEMBLE_HEADS, seed=cfg.run.seed)
    return disagreement_rank(heads, candidates / scale).tolist()
