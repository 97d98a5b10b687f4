"""Human evaluation: a blind campaign of the aligned policy against a baseline, and its win rate.

    rlhf-dist eval --human -c CONFIG --policy DIR --baseline DIR     # creates the campaign
    rlhf-dist eval --human --report CAMPAIGN -c CONFIG               # win rate, bootstrap 95% CI, votes

Response A of every pair is the policy's, B the baseline's; the page shows them in a random order
per assignment and never names the model. Ties count half.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rlhf_dist.algo.agreement import bootstrap_win_rate
from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.records import ComparisonPair
from rlhf_dist.feedback import admin, queue
from rlhf_dist.feedback.db import transaction
from rlhf_dist.feedback.tables import Vote

log = logging.getLogger(__name__)
SEED_TARGET = 0.70  # the seed design's success target: people prefer the aligned model > 70%
POLICY_SCORE = {0: 1.0, 2: 0.5, 1: 0.0}  # preference (0 = A = policy) -> the policy's score


def eval_prompts(cfg: RLHFConfig, n: int) -> list[str]:
    from rlhf_dist.data import load_records
    from rlhf_dist.data.files import resolve_data_files

    rows = load_records(resolve_data_files(cfg).eval_prompts, "prompt", on_error="skip").records
    return [r.prompt for r in rows[:n]]


def create_human_eval_campaign(cfg: RLHFConfig, sessions: sessionmaker[Session], campaign: str, policy_dir: Path,
                               baseline_dir: Path, n_prompts: int) -> int:
    """One pair per held-out prompt: A from the policy, B from the baseline (same seed). Idempotent."""
    from rlhf_dist.driver.sampling import pair_sampler
    from rlhf_dist.feedback.generate import model_source, sample_responses

    try:
        existing = queue.campaign_totals(sessions, campaign)["pairs"]
    except queue.FeedbackError:
        existing = 0
    if existing:
        log.info("human evaluation campaign %s exists (%d pairs): reusing it", campaign, existing)
        return existing
    prompts = eval_prompts(cfg, n_prompts)
    seed = cfg.eval.seed
    sampler = pair_sampler(cfg)  # the cluster's engines where evaluation runs there, else one in this process
    policy, settings = sample_responses(cfg, policy_dir, prompts, seed, per_prompt=1, sampler=sampler)
    baseline, _ = sample_responses(cfg, baseline_dir, prompts, seed, per_prompt=1, sampler=sampler)
    src_a, src_b = model_source(policy_dir), model_source(baseline_dir)
    pairs = [ComparisonPair(prompt=p, response_a=a[0][0], response_b=b[0][0], source_a=src_a, source_b=src_b,
                            sampling=settings, seed=seed, logprobs_a=a[0][1], logprobs_b=b[0][1])
             for p, a, b in zip(prompts, policy, baseline)]
    return admin.add_pairs(sessions, campaign, pairs, kind="evaluation", overlap=cfg.feedback.overlap)


def human_eval_report(sessions: sessionmaker[Session], campaign: str, seed: int = 0) -> dict:
    """Win rate of response A (the policy) with ties as half, a pair-bootstrap 95% CI, and counts."""
    with transaction(sessions) as session:
        camp = queue.find_campaign(session, campaign)
        votes = list(session.scalars(select(Vote).where(Vote.campaign_id == camp.id)))
    per_pair: dict[int, list[float]] = {}
    for vote in votes:
        per_pair.setdefault(vote.pair_id, []).append(POLICY_SCORE[vote.preference])
    if not per_pair:
        raise queue.FeedbackError(409, "campaign", f"campaign {campaign!r} has no votes yet")
    win_rate, lo, hi = bootstrap_win_rate(list(per_pair.values()), seed=seed)
    return {"campaign": campaign, "win_rate": round(win_rate, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
            "votes": len(votes), "pairs": len(per_pair), "ties": sum(v.preference == 2 for v in votes),
            "target": SEED_TARGET, "meets_target": win_rate > SEED_TARGET}
