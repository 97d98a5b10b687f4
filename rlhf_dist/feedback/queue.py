"""What annotators do: lease the next pair, vote on it, skip it. One transaction per call.

The overlap limit and "nobody judges a pair twice" are database constraints (tables.py); the code
here picks a free slot and lets a constraint violation send it to the next candidate, so two
annotators asking at the same moment can never both take a pair's last slot.

Adaptive overlap (campaign.max_votes): the transaction that records a vote locks the pair's row,
reads the pair's votes and, when they split (not all the same side; a tie vote is a split), raises
the pair's votes_wanted, i.e. its slots, to max_votes. A split stays a split, so votes_wanted only
grows and a pair ends with exactly `overlap` votes (they agree) or `max_votes` (they split).

Every vote is written here, by write_vote_once: the service's POST /vote (record_vote) and the
in-process store (feedback/store.py FeedbackStore.add, through vote_on_pair) alike.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from rlhf_dist.feedback.db import transaction
from rlhf_dist.feedback.tables import Assignment, Campaign, Pair, Vote
from rlhf_dist.feedback.text import control_problem

CHOICES = {"left": 0, "right": 1, "tie": 2}
CANDIDATES_PER_TRY = 8
IN_PROCESS_LEASE_S = 60.0  # vote_on_pair's lease: closed in the same transaction that opens it


class FeedbackError(Exception):
    """A request the service refuses: `status` is the HTTP code, `field` the input at fault."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True)
class Task:
    task_id: int
    campaign: str
    prompt: str
    left: str
    right: str
    expires_at: float


def find_campaign(session: Session, name: str) -> Campaign:
    problem = control_problem(name)
    if problem is not None:  # PostgreSQL cannot even compare a NUL: refuse it on both databases
        raise FeedbackError(422, "campaign", problem)
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        known = ", ".join(session.scalars(select(Campaign.name).order_by(Campaign.name))) or "none yet"
        raise FeedbackError(404, "campaign", f"no campaign named {name!r} (known: {known})")
    return campaign


def _task(assignment: Assignment, pair: Pair, campaign: Campaign) -> Task:
    left, right = (pair.response_a, pair.response_b) if assignment.left_is_a else (pair.response_b, pair.response_a)
    return Task(assignment.id, campaign.name, pair.prompt, left, right, assignment.expires_at)


def _live(now: float):  # noqa: ANN202 - SQL expression
    """An assignment that holds its slot: voted, or leased and not yet expired."""
    return or_(Assignment.status == "done", and_(Assignment.status == "leased", Assignment.expires_at > now))


def _candidate_pairs(session: Session, campaign: Campaign, annotator_id: int, now: float) -> list[int]:
    """Pairs of the campaign with a free (or expired) slot that this annotator has never been handed."""
    live_count = (select(func.count()).select_from(Assignment)
                  .where(Assignment.pair_id == Pair.id, _live(now)).scalar_subquery())
    mine = exists().where(Assignment.pair_id == Pair.id, Assignment.annotator_id == annotator_id)
    query = (select(Pair.id).where(Pair.campaign_id == campaign.id, Pair.complete == False, ~mine,  # noqa: E712
                                   live_count < Pair.votes_wanted)
             .order_by(Pair.queue_rank, Pair.id).limit(CANDIDATES_PER_TRY))
    if session.bind.dialect.name != "postgresql":  # SQLite: BEGIN IMMEDIATE already serialises claimers
        return list(session.scalars(query))
    # concurrent claimers spread over different pairs; when every candidate is locked by someone
    # else, wait for them rather than answer "nothing left" while slots may still be free
    return (list(session.scalars(query.with_for_update(of=Pair, skip_locked=True)))
            or list(session.scalars(query.with_for_update(of=Pair))))


def _claim_slot(session: Session, pair_id: int, annotator_id: int, now: float, lease_seconds: float,
                rng: random.Random, left_is_a: bool | None = None) -> Assignment | None:
    """Take a free slot of the pair, or one whose lease expired; None when another annotator won it.
    The page shows A on a random side unless left_is_a fixes it."""
    # the pair's slots now (PostgreSQL: read under the candidate's row lock; it only ever grows, so an
    # older value would only hand out fewer slots)
    wanted = session.scalar(select(Pair.votes_wanted).where(Pair.id == pair_id))
    held = {a.slot: a for a in session.scalars(select(Assignment).where(Assignment.pair_id == pair_id,
                                                                        Assignment.slot.is_not(None)))}
    for slot in range(wanted):
        current = held.get(slot)
        if current is not None:
            if current.status != "leased" or current.expires_at > now:
                continue
            # an expired lease: release it, only if nobody else did in the meantime
            released = session.execute(
                update(Assignment).where(Assignment.id == current.id, Assignment.status == "leased",
                                         Assignment.expires_at <= now).values(status="expired", slot=None)
            ).rowcount
            if released != 1:
                continue
        assignment = Assignment(pair_id=pair_id, annotator_id=annotator_id, slot=slot, status="leased",
                                left_is_a=rng.random() < 0.5 if left_is_a is None else left_is_a, leased_at=now,
                                expires_at=now + lease_seconds)
        try:
            with session.begin_nested():
                session.add(assignment)
            return assignment
        except IntegrityError:  # someone took this slot between our read and our insert
            continue
    return None


def next_task(sessions: sessionmaker[Session], annotator_id: int, campaign_name: str, lease_seconds: float,
              rng: random.Random | None = None) -> Task | None:
    """The annotator's current lease (renewed) or a newly leased pair; None when nothing is left for them."""
    rng = rng or random.Random()
    for _ in range(5):  # each pass re-reads the queue after losing races
        with transaction(sessions) as session:
            campaign = find_campaign(session, campaign_name)
            now = time.time()
            current = session.execute(
                select(Assignment, Pair).join(Pair, Pair.id == Assignment.pair_id)
                .where(Pair.campaign_id == campaign.id, Assignment.annotator_id == annotator_id,
                       Assignment.status == "leased").order_by(Assignment.id).limit(1)
            ).first()
            if current is not None:  # a reload, or coming back after the lease ran out: same pair
                assignment, pair = current
                assignment.leased_at, assignment.expires_at = now, now + lease_seconds
                return _task(assignment, pair, campaign)
            candidates = _candidate_pairs(session, campaign, annotator_id, now)
            if not candidates:
                return None
            for pair_id in candidates:
                assignment = _claim_slot(session, pair_id, annotator_id, now, lease_seconds, rng)
                if assignment is not None:
                    return _task(assignment, session.get(Pair, pair_id), campaign)
    return None


def vote_payload(vote: Vote) -> dict:
    return {"vote_id": vote.id, "task_id": vote.assignment_id, "choice": vote.choice, "confidence": vote.confidence,
            "reasoning": vote.reasoning, "request_id": vote.request_id, "preference": vote.preference,
            "left_is_a": vote.left_is_a, "seconds_spent": round(vote.seconds_spent, 3)}


def _existing_vote(session: Session, annotator_id: int, request_id: str) -> Vote | None:
    return session.scalar(select(Vote).where(Vote.annotator_id == annotator_id, Vote.request_id == request_id))


def write_vote_once(sessions: sessionmaker[Session], annotator_id: int, request_id: str,
                    write: Callable[[Session], Vote], already_voted: str) -> tuple[Vote, bool]:
    """Run `write` (which adds one vote of this annotator) in one transaction, exactly once per request_id:
    a repeated request_id returns the first vote, and (False); a copy racing the first one loses on the
    vote's unique constraints and gets the first vote too, or FeedbackError(409, already_voted) when the
    constraint it broke was "one vote per annotator and pair"."""
    try:
        with transaction(sessions) as session:
            first = _existing_vote(session, annotator_id, request_id)
            if first is not None:
                return first, False
            return write(session), True
    except IntegrityError:  # the same request_id raced itself: the other copy won
        with transaction(sessions) as session:
            first = _existing_vote(session, annotator_id, request_id)
            if first is None:
                raise FeedbackError(409, "task_id", already_voted) from None
            return first, False


def record_vote(sessions: sessionmaker[Session], annotator_id: int, task_id: int, choice: str, confidence: float,
                reasoning: str, request_id: str) -> tuple[dict, bool]:
    """Store one vote in one transaction; returns (vote, created). A repeated request_id returns the first vote."""
    def write(session: Session) -> Vote:
        assignment = session.get(Assignment, task_id)
        if assignment is None or assignment.annotator_id != annotator_id:
            raise FeedbackError(404, "task_id", f"no task {task_id} is assigned to you")
        return _close_lease_and_vote(session, assignment, choice, confidence, reasoning, request_id, time.time())

    vote, created = write_vote_once(sessions, annotator_id, request_id, write,
                                    f"you already voted on the pair of task {task_id}")
    return vote_payload(vote), created


def vote_on_pair(session: Session, pair_id: int, annotator_id: int, choice: str, confidence: float,
                 reasoning: str, request_id: str, left_is_a: bool = True) -> Vote:
    """An in-process judgement (FeedbackStore.add), inside write_vote_once's transaction: lease a slot of the
    pair and vote on it at once, through the slot claim and vote writer the service's annotators use."""
    now = time.time()
    _lock_pair(session, pair_id)
    assignment = _claim_slot(session, pair_id, annotator_id, now, IN_PROCESS_LEASE_S, random.Random(),
                             left_is_a=left_is_a)
    if assignment is None:
        raise FeedbackError(409, "pair", f"pair {pair_id} has no free slot for annotator {annotator_id}")
    return _close_lease_and_vote(session, assignment, choice, confidence, reasoning, request_id, now)


def _close_lease_and_vote(session: Session, assignment: Assignment, choice: str, confidence: float,
                          reasoning: str, request_id: str, now: float) -> Vote:
    """Close the live lease (a request that loses the close to another one gets 409) and write the vote."""
    _check_lease(assignment, now)
    # the pair first, then the assignment: the order next_task takes its locks in
    _lock_pair(session, assignment.pair_id)
    done = session.execute(
        update(Assignment).where(Assignment.id == assignment.id, Assignment.status == "leased",
                                 Assignment.expires_at > now).values(status="done")
    ).rowcount
    if done != 1:
        raise FeedbackError(409, "task_id", f"task {assignment.id} was closed by another request; "
                            "fetch the next task")
    return _insert_vote(session, assignment, choice, confidence, reasoning, request_id, now)


def _lock_pair(session: Session, pair_id: int) -> None:
    """Hold the pair's row until the transaction ends, so votes on one pair are counted one at a time
    (PostgreSQL; SQLite's BEGIN IMMEDIATE already runs one writer at a time)."""
    session.execute(select(Pair.id).where(Pair.id == pair_id).with_for_update())


def _split(session: Session, pair_id: int) -> bool:
    """The pair's votes do not all prefer the same response (a tie vote counts as a split)."""
    sides = set(session.scalars(select(Vote.preference).where(Vote.pair_id == pair_id).distinct()))
    return len(sides) > 1 or CHOICES["tie"] in sides


def _insert_vote(session: Session, assignment: Assignment, choice: str, confidence: float, reasoning: str,
                 request_id: str, now: float) -> Vote:
    """The vote row and, in the same transaction (the pair's row locked by the caller), the pair's vote
    count, its planned votes (max_votes once its votes split) and its complete flag."""
    campaign_id, max_votes, done, wanted = session.execute(
        select(Campaign.id, Campaign.max_votes, Pair.votes_done, Pair.votes_wanted)
        .join(Pair, Pair.campaign_id == Campaign.id).where(Pair.id == assignment.pair_id)).one()
    # "left"/"right" as clicked -> A/B through the side the page showed A on
    preference = CHOICES[choice] if choice == "tie" or assignment.left_is_a else 1 - CHOICES[choice]
    vote = Vote(assignment_id=assignment.id, pair_id=assignment.pair_id, annotator_id=assignment.annotator_id,
                campaign_id=campaign_id, choice=choice, left_is_a=assignment.left_is_a, preference=preference,
                confidence=confidence, reasoning=reasoning, seconds_spent=now - assignment.leased_at,
                request_id=request_id, created_at=now)
    session.add(vote)
    session.flush()
    if max_votes is not None and wanted < max_votes and _split(session, assignment.pair_id):
        wanted = max_votes  # people disagree: the pair stays in the queue for more votes
    session.execute(update(Pair).where(Pair.id == assignment.pair_id).values(
        votes_done=done + 1, votes_wanted=wanted, complete=done + 1 >= wanted))
    return vote


def _check_lease(assignment: Assignment, now: float) -> None:
    if assignment.status == "done":
        raise FeedbackError(409, "task_id", f"you already voted on task {assignment.id}")
    if assignment.status in ("skipped", "expired"):
        raise FeedbackError(409, "task_id", f"task {assignment.id} was {assignment.status}; fetch the next task")
    if assignment.expires_at <= now:
        raise FeedbackError(409, "task_id", f"the lease of task {assignment.id} expired "
                            f"{now - assignment.expires_at:.0f} s "
                            "ago; fetch the next task")


def skip_task(sessions: sessionmaker[Session], annotator_id: int, task_id: int) -> None:
    """Give the pair back to the queue; this annotator will not be handed it again."""
    with transaction(sessions) as session:
        assignment = session.get(Assignment, task_id)
        if assignment is None or assignment.annotator_id != annotator_id:
            raise FeedbackError(404, "task_id", f"no task {task_id} is assigned to you")
        if assignment.status != "leased":
            raise FeedbackError(409, "task_id", f"task {task_id} is {assignment.status}, not open")
        assignment.status, assignment.slot = "skipped", None


def campaign_totals(sessions: sessionmaker[Session], campaign_name: str) -> dict:
    """Votes collected, votes planned so far (overlap per pair, max_votes for pairs whose votes split: it
    grows as pairs split), pairs, and pairs settled (complete). A scan of its pairs: cache it."""
    with transaction(sessions) as session:
        campaign = find_campaign(session, campaign_name)
        pairs, votes, wanted, settled = session.execute(
            select(func.count(), func.coalesce(func.sum(Pair.votes_done), 0),
                   func.coalesce(func.sum(Pair.votes_wanted), 0),
                   func.coalesce(func.sum(case((Pair.complete, 1), else_=0)), 0))
            .where(Pair.campaign_id == campaign.id)).one()
    return {"votes": int(votes), "wanted": int(wanted), "pairs": int(pairs), "settled": int(settled)}


def votes_by(sessions: sessionmaker[Session], annotator_id: int, campaign_name: str) -> int:
    """This annotator's votes in the campaign (an index range: cheap on every task)."""
    with transaction(sessions) as session:
        campaign = find_campaign(session, campaign_name)
        return int(session.scalar(select(func.count()).select_from(Vote)
                                  .where(Vote.campaign_id == campaign.id, Vote.annotator_id == annotator_id)))
