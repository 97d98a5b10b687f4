"""The feedback database without a server: migrations, constraints, the seed API's store."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rlhf_dist.data.records import ComparisonPair
from rlhf_dist.feedback import admin, queue
from rlhf_dist.feedback.db import FeedbackDBError, open_database, transaction
from rlhf_dist.feedback.store import FeedbackStore
from rlhf_dist.feedback.tables import Assignment, Base, Pair, Vote


def test_the_migration_creates_exactly_the_models(tmp_path):
    sessions = open_database(f"sqlite:///{tmp_path / 'f.sqlite'}")
    with sessions.kw["bind"].connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    open_database(f"sqlite:///{tmp_path / 'f.sqlite'}")  # a second open is a no-op upgrade


def test_a_slot_holds_one_live_assignment(tmp_path):
    sessions = open_database(f"sqlite:///{tmp_path / 'f.sqlite'}")
    admin.add_pairs(sessions, "c", [ComparisonPair(prompt="p", response_a="a", response_b="b")], overlap=2)
    admin.add_annotator(sessions, "x")
    admin.add_annotator(sessions, "y")
    with pytest.raises(IntegrityError):  # the database itself refuses a second holder of slot 0
        with transaction(sessions) as session:
            for annotator_id in (1, 2):
                session.add(Assignment(pair_id=1, annotator_id=annotator_id, slot=0, status="leased",
                                       left_is_a=True, leased_at=0.0, expires_at=1e12))
    with pytest.raises(IntegrityError):  # a released assignment holds no slot
        with transaction(sessions) as session:
            session.add(Assignment(pair_id=1, annotator_id=1, slot=1, status="skipped", left_is_a=True,
                                   leased_at=0.0, expires_at=1e12))
    with transaction(sessions) as session:
        assert session.scalars(select(Assignment)).all() == []


def test_seed_store_shares_the_service_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    store = FeedbackStore(url)
    store.add("Review.", "Lovely!", "Awful.", 0, 0.9, "kind", round_index=1)
    store.add("Tie?", "same", "same too", 2, 0.4, annotator="simulated", round_index=2)
    with pytest.raises(ValueError, match="preference"):
        store.add("p", "a", "b", 3)
    assert len(store) == 2
    stats = store.statistics()
    assert (stats["prefer_a"], stats["ties"], stats["per_round"]) == (1, 1, {"1": 1, "2": 1})
    assert [r.preference for r in store.records(round_index=2)] == [2]

    sessions = open_database(url)  # the service sees the seed API's votes, and the other way round
    assert {s["campaign"]: s["votes"] for s in admin.all_stats(sessions)} == {"round-1": 1, "round-2": 1}
    admin.add_pairs(sessions, "web", [ComparisonPair(prompt="w", response_a="a", response_b="b")])
    alice = admin.annotator_for_token(sessions, admin.add_annotator(sessions, "alice"))
    task = queue.next_task(sessions, alice.id, "web", 60)
    queue.record_vote(sessions, alice.id, task.task_id, "tie", 0.55, "", "r1")
    assert len(FeedbackStore(url)) == 3


def test_seed_store_writes_votes_through_the_service_vote_path(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    sessions = open_database(url)
    with transaction(sessions) as session:  # round 0's campaign exists already, with the service's overlap 2
        admin.get_or_create_campaign(session, "round-0", "training", 2, 0)
    store = FeedbackStore(url)
    first = store.add("p", "a", "b", 1, 0.7, request_id="once")
    assert store.add("p", "a", "b", 1, 0.7, request_id="once") == first  # a retry stores nothing more
    assert len(store) == 1
    with transaction(sessions) as session:
        (assignment,) = session.scalars(select(Assignment)).all()
        vote, pair = session.get(Vote, first), session.get(Pair, assignment.pair_id)
        assert (assignment.status, assignment.slot, assignment.left_is_a) == ("done", 0, True)
        assert (vote.choice, vote.preference, vote.request_id, vote.seconds_spent) == ("right", 1, "once", 0.0)
        assert (pair.votes_done, pair.complete) == (1, False)  # one of the campaign's 2 votes
    # so the pair's second slot goes to an annotator of the service, and its vote completes it
    bob = admin.annotator_for_token(sessions, admin.add_annotator(sessions, "bob"))
    task = queue.next_task(sessions, bob.id, "round-0", 60)
    assert task is not None and task.prompt == "p"
    queue.record_vote(sessions, bob.id, task.task_id, "tie", 0.5, "", "b1")
    with transaction(sessions) as session:
        assert session.get(Pair, assignment.pair_id).complete
    assert [r.preference for r in store.records()] == [1, 2]


def test_bad_database_urls_are_one_clear_error(tmp_path):
    with pytest.raises(FeedbackDBError, match="feedback.db_url"):
        open_database("mysql://x@localhost/db")
    with pytest.raises(FeedbackDBError, match="cannot parse"):
        open_database("::nonsense::")
    with pytest.raises(FeedbackDBError, match="cannot open"):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none", retries=1)


def test_flagged_annotators_are_dropped_or_downweighted_in_exports(tmp_path):
    import json

    sessions = open_database(f"sqlite:///{tmp_path / 'f.sqlite'}")
    gold = [ComparisonPair(prompt=f"g{i}", response_a="good", response_b="bad", gold=0) for i in range(4)]
    admin.add_pairs(sessions, "qc", gold, overlap=3)
    ids = {n: admin.annotator_for_token(sessions, admin.add_annotator(sessions, n)).id for n in ("ok1", "ok2", "bad")}
    for name, annotator_id in ids.items():
        for i in range(4):
            task = queue.next_task(sessions, annotator_id, "qc", 60)
            correct = name != "bad" or i == 0  # "bad" is right on 1 of 4 gold pairs
            side = "left" if task.left == "good" else "right"
            choice = side if correct else ("right" if side == "left" else "left")
            queue.record_vote(sessions, annotator_id, task.task_id, choice, 0.8, "", f"{name}-{i}")
    stats = admin.all_stats(sessions, "qc", min_reliability=0.5)[0]
    assert stats["flagged"] == ["bad"] and stats["annotators"]["bad"]["gold_accuracy"] == 0.25
    assert stats["annotators"]["ok1"]["gold_accuracy"] == 1.0

    def export(policy: str) -> list[dict]:
        meta = admin.export_snapshot(sessions, "qc", tmp_path / f"{policy}.jsonl", "soft", quality=(0.5, policy))
        return [json.loads(line) for line in open(meta["path"])]

    kept, dropped, weighted = export("keep"), export("drop"), export("downweight")
    assert [r["p_a"] for r in kept] == pytest.approx([1.0] + [2 / 3] * 3)  # bad's 3 wrong votes count
    assert [r["p_a"] for r in dropped] == [1.0] * 4  # only ok1 and ok2 remain
    assert [r["confidence"] for r in weighted][1:] == pytest.approx([(0.8 + 0.8 + 0.8 * 0.25) / 3] * 3)


def test_a_round_pass_is_stored_once_all_or_none(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    store = FeedbackStore(url)
    pairs = [ComparisonPair(prompt=f"p{i}", response_a=f"a{i}", response_b=f"b{i}", source_a="m@1", source_b="m@1",
                            logprobs_a=[-0.5], logprobs_b=[-1.0]) for i in range(3)]
    labels = [(0, 0.9, "a"), (2, 0.5, "tie"), (1, 0.8, "b")]
    assert store.judged_pass("run-round-1", 7) is None
    assert store.add_pass("run-round-1", 1, 7, pairs, labels) == 3
    # a restarted pipeline that stores the same pass again (even with other samples) adds nothing
    assert store.add_pass("run-round-1", 1, 7, pairs[:1], [(1, 1.0, "")]) == 0
    assert len(store) == 3 and store.statistics()["per_round"] == {"1": 3}
    stored = store.judged_pass("run-round-1", 7)
    assert [(r.prompt, r.preference, r.confidence) for r in stored] == [("p0", 0, 0.9), ("p1", 2, 0.5), ("p2", 1, 0.8)]
    assert store.judged_pass("run-round-1", 1007) is None and store.judged_pass("run-round-2", 7) is None
    assert store.add_pass("run-round-1", 1, 1007, pairs[:2], labels[:2]) == 2  # the round's next pass
    assert len(store) == 5
    # a bad label stores nothing of its pass
    with pytest.raises(ValueError, match="preference"):
        store.add_pass("run-round-2", 2, 8, pairs, [(0, 0.9, ""), (0, 0.9, ""), (5, 0.9, "")])
    assert store.judged_pass("run-round-2", 8) is None and len(store) == 5
    with transaction(open_database(url)) as session:
        pair = session.scalars(select(Pair).order_by(Pair.id)).first()
        assert (pair.seed, pair.source_a, pair.complete) == (7, "m@1", True)
