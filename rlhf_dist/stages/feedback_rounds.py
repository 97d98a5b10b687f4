"""A pipeline round whose labels come from the feedback service (feedback.source: service | service-simulated).

    pairs from the current policy -> campaign "<run.name>-round-<r>" (kept across restarts: never regenerated)
    -> wait for feedback.votes_per_round votes (progress bar; deadline feedback.wait_timeout_s)
    -> a versioned snapshot (A/B JSONL) the round's reward model trains on, with the earlier rounds' snapshots

With service-simulated, the service runs on loopback for the wait and simulated annotators vote
through its HTTP API, the path people take in a browser.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.records import ABFeedback, ComparisonPair
from rlhf_dist.feedback import admin, queue
from rlhf_dist.feedback.db import db_url_of, open_database, transaction
from rlhf_dist.feedback.queue import FeedbackError

log = logging.getLogger(__name__)
POLL_S = 0.5


def round_campaign(cfg: RLHFConfig, round_index: int) -> str:
    return f"{cfg.run.name}-round-{round_index}"


def _pair_count(sessions: sessionmaker[Session], campaign: str) -> int:
    try:
        return queue.campaign_totals(sessions, campaign)["pairs"]
    except FeedbackError:  # no such campaign yet
        return 0


def ensure_round_pairs(cfg: RLHFConfig, sessions: sessionmaker[Session], campaign: str, policy_dir: Path,
                       prompts: list[str], seed: int, reward_dir: Path | None, labelled: list[ABFeedback]) -> int:
    """The campaign's pairs: sampled from the policy once; a restarted pipeline finds and keeps them."""
    existing = _pair_count(sessions, campaign)
    if existing:
        log.info("campaign %s already holds %d pairs: waiting for their votes (not regenerating)", campaign, existing)
        return existing
    from rlhf_dist.driver.sampling import pair_sampler, pair_scorer
    from rlhf_dist.feedback.generate import sample_pairs
    from rlhf_dist.feedback.selection import selection_ranks

    pairs = sample_pairs(cfg, policy_dir, prompts, seed, pair_sampler(cfg))
    ranks = selection_ranks(cfg, pairs, reward_dir, labelled, pair_scorer(cfg))
    gold = gold_pairs(cfg, len(pairs), seed)
    if gold:  # spread through the queue, so every annotator meets some
        rng = random.Random(seed)
        ranks = list(ranks) + [rng.choice(ranks) for _ in gold]
        log.info("campaign %s: %d gold pairs from %s mixed in", campaign, len(gold), cfg.feedback.gold_path)
    return admin.add_pairs(sessions, campaign, pairs + gold, "training", cfg.feedback.overlap, ranks,
                           max_votes=cfg.feedback.adaptive_overlap.max_votes)


def gold_pairs(cfg: RLHFConfig, n_generated: int, seed: int) -> list[ComparisonPair]:
    """round(feedback.gold_rate * n) pairs with known answers from feedback.gold_path (seeded draw)."""
    fb = cfg.feedback
    if not fb.gold_path or fb.gold_rate == 0:
        return []
    from rlhf_dist.data import load_records

    rows = [r for r in load_records(fb.gold_path, "comparison", on_error=cfg.data.on_error).records
            if r.gold is not None]
    if not rows:
        raise ValueError(f"feedback.gold_path: {fb.gold_path} has no rows with a 'gold' answer")
    k = round(fb.gold_rate * n_generated)
    return random.Random(seed).sample(rows, min(k, len(rows)))


def wait_for_votes(sessions: sessionmaker[Session], campaign: str, target: int | None, timeout_s: float,
                   show_progress: bool = True) -> int:
    """Block until every pair of the campaign is settled (target None) or it has `target` votes, never more
    than its pairs' planned votes; a progress bar shows votes, votes/s and the ETA.

    The planned votes are re-read on every poll: with feedback.adaptive_overlap they grow while pairs split.
    """
    from tqdm import tqdm

    started, totals = time.monotonic(), queue.campaign_totals(sessions, campaign)
    with tqdm(total=totals["wanted"], desc=f"votes for {campaign}", unit="vote", disable=not show_progress,
              dynamic_ncols=True) as bar:
        while True:
            totals = queue.campaign_totals(sessions, campaign)
            votes, goal = totals["votes"], min(target or totals["wanted"], totals["wanted"])
            bar.total = goal  # votes >= every pair's planned votes <=> every pair is settled
            bar.update(min(votes, goal) - bar.n)
            if votes >= goal:
                return votes
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"campaign {campaign}: {votes} of {goal} votes ({totals['settled']} of "
                                   f"{totals['pairs']} pairs settled) after {timeout_s:.0f} s "
                                   "(feedback.wait_timeout_s); run the pipeline again to keep waiting")
            time.sleep(POLL_S)


@contextmanager
def simulated_annotators(cfg: RLHFConfig, db_url: str, campaign: str, log_dir: Path) -> Iterator[None]:
    """The service on a free loopback port and feedback.simulated.count annotators voting through it."""
    from rlhf_dist.feedback.client import HTTPAnnotator
    from rlhf_dist.feedback.server_process import FeedbackServerProcess
    from rlhf_dist.feedback.simulated import http_judge

    sim = cfg.feedback.simulated
    sessions = open_database(db_url)
    tokens = []
    for i in range(sim.count):
        tokens.append(secrets.token_urlsafe(32))
        admin.ensure_annotator(sessions, f"simulated-{i}", tokens[-1])
    server = FeedbackServerProcess(db_url, log_dir, admin_token=secrets.token_urlsafe(32),
                                   lease_seconds=cfg.feedback.lease_seconds, rate_limit_per_minute=0).start()
    done = threading.Event()
    clients = [HTTPAnnotator(server.url, token, campaign, http_judge(
        sim.rule, sim.noise, sim.tie_margin, sim.tie_rate, sim.position_bias, seed=cfg.run.seed * 1000 + i))
        for i, token in enumerate(tokens)]
    threads = [threading.Thread(target=c.work, kwargs={"idle_wait_s": 1e9, "deadline_s": cfg.feedback.wait_timeout_s,
                                                       "stop": done.is_set}, daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
        for c in clients:
            c.close()
        server.stop()


def collect_votes(cfg: RLHFConfig, db_url: str, campaign: str, target: int | None, log_dir: Path) -> int:
    """Wait for `target` votes on the campaign (None: until every pair is settled); with service-simulated,
    simulated annotators cast them."""
    sessions = open_database(db_url)
    if cfg.feedback.source == "service-simulated":
        with simulated_annotators(cfg, db_url, campaign, log_dir):
            return wait_for_votes(sessions, campaign, target, cfg.feedback.wait_timeout_s, cfg.tracking.progress)
    return wait_for_votes(sessions, campaign, target, cfg.feedback.wait_timeout_s, cfg.tracking.progress)


def collect_service_round(cfg: RLHFConfig, round_index: int, round_dir: Path, policy_dir: Path,
                          prompts: list[str], reward_dir: Path | None, labelled: list[ABFeedback]) -> Path:
    """Pairs from the current policy -> votes -> a snapshot file; returns its path.

    reward_dir / labelled: the previous round's reward model and votes, for feedback.selection.
    """
    db_url = db_url_of(cfg.feedback.db_url, cfg.run.output_dir)
    sessions = open_database(db_url)
    campaign = round_campaign(cfg, round_index)
    n_pairs = ensure_round_pairs(cfg, sessions, campaign, policy_dir, prompts, cfg.run.seed * 31 + round_index,
                                 reward_dir, labelled)
    target = cfg.feedback.votes_per_round  # None: every pair settled (adaptive overlap: split pairs get more)
    log.info("round %d: waiting for %s on campaign %s, %d pairs (serve it: rlhf-dist feedback serve; "
             "annotators open /?campaign=%s)", round_index, "every pair's votes" if target is None else
             f"{target} votes", campaign, n_pairs, campaign)
    collect_votes(cfg, db_url, campaign, target, round_dir)
    fb = cfg.feedback
    meta = admin.export_snapshot(sessions, campaign, round_dir / "feedback" / f"{campaign}.jsonl", fb.aggregate,
                                 quality=(fb.min_reliability, fb.unreliable))
    log.info("round %d: snapshot v%d of %s: %d pairs from %d votes", round_index, meta["version"], campaign,
             meta["rows"], meta["votes"])
    return Path(meta["path"])


def run_human_evaluation(cfg: RLHFConfig, run_dir: Path, policy_dir: Path, baseline_dir: Path) -> dict:
    """The pipeline's closing human evaluation: a blind campaign, its votes, the win rate with a CI."""
    from rlhf_dist.eval.human import create_human_eval_campaign, human_eval_report

    db_url = db_url_of(cfg.feedback.db_url, cfg.run.output_dir)
    sessions = open_database(db_url)
    campaign = f"{cfg.run.name}-human-eval"
    n_pairs = create_human_eval_campaign(cfg, sessions, campaign, policy_dir, baseline_dir,
                                         cfg.feedback.human_eval_prompts)
    with transaction(sessions) as session:
        overlap = queue.find_campaign(session, campaign).overlap
    collect_votes(cfg, db_url, campaign, n_pairs * overlap, run_dir)
    report = human_eval_report(sessions, campaign, seed=cfg.eval.seed)
    log.info("human evaluation %s: win rate %.3f [%.3f, %.3f] over %d votes (target > %.2f)", campaign,
             report["win_rate"], report["ci_low"], report["ci_high"], report["votes"], report["target"])
    return report
