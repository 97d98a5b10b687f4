"""The seed API's feedback store, on the same database as the feedback service.

`add()` records an in-process judgement (the seed's `stage1_collect_feedback`, the simulated
annotator) as a pair in campaign "round-<r>" with one vote, through the same tables, constraints,
migrations and vote writer (feedback/queue.py: slot lease, vote, exactly once per request id) that
the HTTP API uses: one store, not two. `add_pass()` stores a pipeline round's in-process judgements of one
sampling pass in one transaction, keyed by (campaign, seed): stored once, never twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from rlhf_dist.data.readers import write_jsonl
from rlhf_dist.data.records import ABFeedback, ComparisonPair
from rlhf_dist.feedback import queue
from rlhf_dist.feedback.admin import get_or_create_campaign
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Annotator, Campaign, Pair, Vote

CHOICE_OF = {0: "left", 1: "right", 2: "tie"}  # in-process votes "see" A on the left


def round_campaign(round_index: int) -> str:
    return f"round-{round_index}"


class FeedbackStore:
    def __init__(self, db_url: str):
        self.url = db_url
        self.sessions = open_database(db_url)

    @property
    def where(self) -> str:
        """The database, for messages (password hidden)."""
        return make_url(self.url).render_as_string(hide_password=True)

    def _annotator_id(self, name: str) -> int:
        """The annotator's id, created (without a login token) on first use."""
        with transaction(self.sessions) as session:
            found = session.scalar(select(Annotator.id).where(Annotator.name == name))
            if found is not None:
                return found
            annotator = Annotator(name=name, role="annotator", token_hash=None, created_at=time.time())
            session.add(annotator)
            session.flush()
            return annotator.id

    def add(self, prompt: str, response_a: str, response_b: str, preference: int, confidence: float = 1.0,
            reasoning: str = "", annotator: str = "human", round_index: int = 0,
            request_id: str | None = None) -> int:
        """Validate and store one judgement; returns the vote's id. Bad input raises ValueError naming the field.

        request_id: a retry with the same id (and annotator) returns the first vote's id and stores nothing
        (default: a fresh id, so every call stores a vote)."""
        row = ABFeedback(prompt=prompt, response_a=response_a, response_b=response_b, preference=preference,
                         confidence=confidence, reasoning=reasoning)
        annotator_id = self._annotator_id(annotator)

        def write(session: Session) -> Vote:
            campaign = get_or_create_campaign(session, round_campaign(round_index), "training", 1, round_index)
            pair = Pair(campaign_id=campaign.id, prompt=row.prompt, response_a=row.response_a,
                        response_b=row.response_b, source_a="", source_b="", queue_rank=0.0, votes_done=0,
                        votes_wanted=campaign.overlap, complete=False, created_at=time.time())
            session.add(pair)
            session.flush()
            return queue.vote_on_pair(session, pair.id, annotator_id, CHOICE_OF[row.preference], row.confidence,
                                      row.reasoning, request_id_, left_is_a=True)

        request_id_ = request_id or uuid.uuid4().hex
        vote, _created = queue.write_vote_once(self.sessions, annotator_id, request_id_, write,
                                               f"annotator {annotator!r} already voted on this pair")
        return int(vote.id)

    def judged_pass(self, campaign: str, seed: int) -> list[ABFeedback] | None:
        """The judgements stored by add_pass for (campaign, seed), in the order they were made; None: not stored."""
        query = (select(Vote, Pair).join(Pair, Pair.id == Vote.pair_id).join(Campaign, Campaign.id == Pair.campaign_id)
                 .where(Campaign.name == campaign, Pair.seed == seed).order_by(Pair.id))
        with transaction(self.sessions) as session:
            rows = [ABFeedback(prompt=p.prompt, response_a=p.response_a, response_b=p.response_b,
                               preference=v.preference, confidence=v.confidence, reasoning=v.reasoning)
                    for v, p in session.execute(query)]
        return rows or None

    def add_pass(self, campaign: str, round_index: int, seed: int, pairs: Sequence[ComparisonPair],
                 judgements: Sequence[tuple[int, float, str]], annotator: str = "simulated") -> int:
        """Store one sampling pass of in-process judgements ((preference, confidence, reasoning) per pair), all or
        none, keyed by (campaign, seed): when that pass is stored already nothing is added (returns 0), so a
        restarted pipeline never stores a round's pass twice. Returns the number of votes added."""
        rows = [ABFeedback(prompt=p.prompt, response_a=p.response_a, response_b=p.response_b, preference=pref,
                           confidence=conf, reasoning=why) for p, (pref, conf, why) in zip(pairs, judgements)]
        annotator_id, now = self._annotator_id(annotator), time.time()
        with transaction(self.sessions) as session:
            found = get_or_create_campaign(session, campaign, "training", 1, round_index)
            if session.scalar(select(Pair.id).where(Pair.campaign_id == found.id, Pair.seed == seed).limit(1)):
                return 0
            for i, (pair, row) in enumerate(zip(pairs, rows)):
                logprobs = None if pair.logprobs_a is None else json.dumps({"a": pair.logprobs_a, "b": pair.logprobs_b})
                stored = Pair(campaign_id=found.id, prompt=row.prompt, response_a=row.response_a,
                              response_b=row.response_b, source_a=pair.source_a, source_b=pair.source_b,
                              sampling_json=None if pair.sampling is None else json.dumps(pair.sampling), seed=seed,
                              logprobs_json=logprobs, queue_rank=0.0, votes_done=0, votes_wanted=found.overlap,
                              complete=False, created_at=now)
                session.add(stored)
                session.flush()
                queue.vote_on_pair(session, stored.id, annotator_id, CHOICE_OF[row.preference], row.confidence,
                                   row.reasoning, f"{campaign}/{seed}/{i}", left_is_a=True)
        return len(rows)

    def _votes(self, round_index: int | None = None):  # noqa: ANN202 - a select
        query = (select(Vote, Pair, Campaign, Annotator).join(Pair, Pair.id == Vote.pair_id)
                 .join(Campaign, Campaign.id == Pair.campaign_id).join(Annotator, Annotator.id == Vote.annotator_id))
        if round_index is not None:
            query = query.where(Campaign.round_index == round_index)
        return query.order_by(Vote.id)

    def records(self, round_index: int | None = None) -> list[ABFeedback]:
        """Every vote as an A/B row (votes from the service included), oldest first."""
        with transaction(self.sessions) as session:
            return [ABFeedback(prompt=p.prompt, response_a=p.response_a, response_b=p.response_b,
                               preference=v.preference, confidence=v.confidence, reasoning=v.reasoning)
                    for v, p, _c, _a in session.execute(self._votes(round_index))]

    def __len__(self) -> int:
        with transaction(self.sessions) as session:
            return int(session.scalar(select(func.count()).select_from(Vote)))

    def statistics(self) -> dict:
        """Counts per preference, mean confidence, and counts per round and annotator."""
        prefs = {0: 0, 1: 0, 2: 0}
        rounds: dict[str, int] = {}
        annotators: dict[str, int] = {}
        confidence = 0.0
        with transaction(self.sessions) as session:
            for vote, _pair, campaign, annotator in session.execute(self._votes()):
                prefs[vote.preference] += 1
                confidence += vote.confidence
                if campaign.round_index is not None:
                    rounds[str(campaign.round_index)] = rounds.get(str(campaign.round_index), 0) + 1
                annotators[annotator.name] = annotators.get(annotator.name, 0) + 1
        total = sum(prefs.values())
        return {
            "total": total, "prefer_a": prefs[0], "prefer_b": prefs[1], "ties": prefs[2],
            "mean_confidence": confidence / total if total else None,
            "per_round": rounds, "per_annotator": annotators,
        }

    def export_jsonl(self, out_path: str | Path) -> Path:
        """All feedback as an A/B JSONL file (data.pairs_format: ab)."""
        return write_jsonl(out_path, self.records())
