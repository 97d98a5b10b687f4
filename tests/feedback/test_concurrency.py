"""20 annotators at once against one server: exact overlap, no duplicates, no 5xx; then kill -9 mid-run."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select

from rlhf_dist.feedback.client import AnnotatorRun, HTTPAnnotator
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Assignment, Vote
from tests.feedback.conftest import add_annotator, import_pairs, make_pairs

pytestmark = pytest.mark.slow
N_CLIENTS, N_PAIRS, OVERLAP = 20, 300, 3


def _random_judge(seed: int):
    rng = random.Random(seed)
    return lambda _prompt, _left, _right: (rng.choice(["left", "right", "tie"]), rng.choice([0.55, 0.7, 0.85, 1.0]))


def _run_clients(annotators: list[HTTPAnnotator], **work) -> list[AnnotatorRun]:
    runs: list[AnnotatorRun | None] = [None] * len(annotators)

    def go(i: int) -> None:
        runs[i] = annotators[i].work(**work)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(annotators))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs  # type: ignore[return-value]


def _assert_complete(db_url: str, acked: list[int]) -> None:
    with transaction(open_database(db_url)) as session:
        votes = list(session.scalars(select(Vote)))
    per_pair: dict[int, list[int]] = {}
    for v in votes:
        per_pair.setdefault(v.pair_id, []).append(v.annotator_id)
    assert len(per_pair) == N_PAIRS
    assert Counter(len(a) for a in per_pair.values()) == {OVERLAP: N_PAIRS}  # exactly 3 votes on every pair
    assert all(len(set(a)) == OVERLAP for a in per_pair.values())  # from 3 distinct annotators
    assert len(acked) == len(set(acked))  # no vote acknowledged twice
    assert set(acked) <= {v.id for v in votes}  # every 201 is in the database


def _setup(server, n_clients: int) -> list[str]:
    admin = server.client()
    import_pairs(admin, "load", make_pairs(N_PAIRS), overlap=OVERLAP)
    return [add_annotator(admin, f"annotator-{i}") for i in range(n_clients)]


def test_twenty_annotators_fill_every_pair_exactly(db_url, serve):
    server = serve(db_url)
    tokens = _setup(server, N_CLIENTS)
    clients = [HTTPAnnotator(server.url, t, "load", _random_judge(i)) for i, t in enumerate(tokens)]
    runs = _run_clients(clients, deadline_s=600)
    statuses = sum((r.statuses for r in runs), Counter())
    assert not [s for s in statuses if s >= 500], statuses
    acked = [v for r in runs for v in r.acked_vote_ids]
    assert len(acked) == N_PAIRS * OVERLAP and statuses[201] == N_PAIRS * OVERLAP
    _assert_complete(db_url, acked)


def test_kill_9_mid_run_loses_no_acknowledged_vote(db_url, serve):
    server = serve(db_url, lease_seconds=3)
    tokens = _setup(server, N_CLIENTS)
    clients = [HTTPAnnotator(server.url, t, "load", _random_judge(i)) for i, t in enumerate(tokens)]

    # phase 1: everyone votes until the server dies under them
    def kill_when_busy() -> None:
        while sum(len(c.run.acked_vote_ids) for c in clients) < 250:
            time.sleep(0.05)
        server.kill()
    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    _run_clients(clients, deadline_s=300, retry_connection_s=0.0)
    killer.join()
    acked_before = [v for c in clients for v in c.run.acked_vote_ids]
    assert 250 <= len(acked_before) < N_PAIRS * OVERLAP

    # phase 2: restart on the same port and database; 5 annotators never come back, so their
    # leases must expire and return to the queue for the 15 others
    server.start()
    with transaction(open_database(server.db_url)) as session:
        stored = {v.id for v in session.scalars(select(Vote))}
    assert set(acked_before) <= stored  # no acknowledged vote was lost

    for quitter in clients[:5]:  # each holds a lease when it walks away
        quitter._pending = None
        assert quitter.client.get("/api/v1/tasks/next", params={"campaign": "load"}).status_code == 200
    survivors = clients[5:]
    runs = _run_clients(survivors, deadline_s=600, idle_wait_s=6.0, retry_connection_s=30.0)
    statuses = sum((r.statuses for r in runs), Counter())
    assert not [s for s in statuses if s >= 500], statuses
    acked = [v for c in clients for v in c.run.acked_vote_ids]
    _assert_complete(db_url, acked)
    with transaction(open_database(db_url)) as session:
        expired = session.scalars(select(Assignment.annotator_id).where(Assignment.status == "expired")).all()
    assert len(expired) >= 5  # the quitters' leases ran out and went to others
