"""20 annotators at once against one server: exact overlap, no duplicates, no 5xx; then kill -9 mid-run.

Each test runs with adaptive overlap (feedback.adaptive_overlap.max_votes), which holds the fixed case: the
annotators agree on the even pairs (a fixed overlap's pairs) and answer at random on the odd ones, so every
pair must end with exactly OVERLAP votes (they agree) or MAX_VOTES (they split), never one more. (Once per
case, not twice: each costs CI half a minute; test_api.py covers a fixed overlap's leases and annotators.)
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select

from rlhf_dist.feedback.client import AnnotatorRun, HTTPAnnotator
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Assignment, Pair, Vote
from tests.feedback.conftest import add_annotator, import_pairs, make_pairs

pytestmark = pytest.mark.slow
N_CLIENTS, N_PAIRS, OVERLAP, MAX_VOTES = 20, 300, 3, 5
ADAPTIVE = pytest.mark.parametrize("max_votes", [MAX_VOTES], ids=["adaptive"])


def _random_judge(seed: int):
    """A random answer on odd pairs; on even ones everybody prefers response A ("p A<i>")."""
    rng = random.Random(seed)

    def judge(prompt: str, left: str, _right: str) -> tuple[str, float]:
        confidence = rng.choice([0.55, 0.7, 0.85, 1.0])
        if int(prompt.split()[-1]) % 2 == 0:
            return ("left" if left.split()[-1].startswith("A") else "right"), confidence
        return rng.choice(["left", "right", "tie"]), confidence
    return judge


def _split(preferences: list[int]) -> bool:
    return len(set(preferences)) > 1 or 2 in preferences


def _stop_when_settled(server) -> tuple[threading.Event, threading.Thread]:
    """An event set once every pair has its planned votes: with adaptive overlap a pair may reopen after an
    annotator was told "nothing left", so annotators keep asking until then."""
    settled = threading.Event()

    def watch() -> None:
        with server.client() as admin:
            while not settled.is_set():
                r = admin.get("/api/v1/progress", params={"campaign": "load"})
                if r.status_code == 200 and r.json()["settled"] == N_PAIRS:
                    settled.set()
                time.sleep(0.5)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return settled, watcher


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


def _assert_complete(db_url: str, acked: list[int], max_votes: int | None) -> int:
    """Every pair has exactly its planned votes from distinct annotators; returns how many pairs split."""
    with transaction(open_database(db_url)) as session:
        votes = list(session.scalars(select(Vote)))
        pairs = {p.id: p for p in session.scalars(select(Pair))}
    per_pair: dict[int, list[Vote]] = {}
    for v in votes:
        per_pair.setdefault(v.pair_id, []).append(v)
    assert len(per_pair) == N_PAIRS
    split = {pid for pid, vs in per_pair.items() if _split([v.preference for v in vs])}
    planned = {pid: max_votes if max_votes and pid in split else OVERLAP for pid in per_pair}
    assert {pid: len(vs) for pid, vs in per_pair.items()} == planned  # 3 votes, or 5 where they split
    assert all(len({v.annotator_id for v in vs}) == len(vs) for vs in per_pair.values())  # distinct annotators
    assert all((p.votes_done, p.votes_wanted, p.complete) == (planned[pid], planned[pid], True)
               for pid, p in pairs.items())
    assert len(acked) == len(set(acked))  # no vote acknowledged twice
    assert set(acked) <= {v.id for v in votes}  # every 201 is in the database
    assert all(int(pairs[pid].prompt.split()[-1]) % 2 == 1 for pid in split)  # only the random half splits
    assert N_PAIRS // 4 <= len(split), len(split)  # ~93% of the random half (unanimous: 2 in 27)
    return len(split)


def _setup(server, n_clients: int, max_votes: int | None) -> list[str]:
    admin = server.client()
    import_pairs(admin, "load", make_pairs(N_PAIRS), overlap=OVERLAP, max_votes=max_votes)
    return [add_annotator(admin, f"annotator-{i}") for i in range(n_clients)]


@ADAPTIVE
def test_twenty_annotators_fill_every_pair_exactly(db_url, serve, max_votes):
    server = serve(db_url)
    tokens = _setup(server, N_CLIENTS, max_votes)
    clients = [HTTPAnnotator(server.url, t, "load", _random_judge(i)) for i, t in enumerate(tokens)]
    settled, watcher = _stop_when_settled(server)
    runs = _run_clients(clients, deadline_s=600, idle_wait_s=600, stop=settled.is_set)
    settled.set()  # also when the clients gave up: the assertions below tell
    watcher.join()
    statuses = sum((r.statuses for r in runs), Counter())
    assert not [s for s in statuses if s >= 500], statuses
    acked = [v for r in runs for v in r.acked_vote_ids]
    split = _assert_complete(db_url, acked, max_votes)
    total = N_PAIRS * OVERLAP + (split * (max_votes - OVERLAP) if max_votes else 0)
    assert len(acked) == total and statuses[201] == total
    stats = server.client().get("/api/v1/stats", params={"campaign": "load"}).json()[0]
    assert (stats["votes"], stats["votes_wanted"], stats["pairs_complete"]) == (total, total, N_PAIRS)
    assert (stats["pairs_split"], stats["extra_votes"]) == ((split, total - N_PAIRS * OVERLAP) if max_votes
                                                            else (0, 0))


@ADAPTIVE
def test_kill_9_mid_run_loses_no_acknowledged_vote(db_url, serve, max_votes):
    server = serve(db_url, lease_seconds=3)
    tokens = _setup(server, N_CLIENTS, max_votes)
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
    settled, watcher = _stop_when_settled(server)  # until then, wait for the quitters' leases to expire
    runs = _run_clients(survivors, deadline_s=600, idle_wait_s=600, retry_connection_s=30.0, stop=settled.is_set)
    settled.set()  # also when the clients gave up: the assertions below tell
    watcher.join()
    statuses = sum((r.statuses for r in runs), Counter())
    assert not [s for s in statuses if s >= 500], statuses
    acked = [v for c in clients for v in c.run.acked_vote_ids]
    _assert_complete(db_url, acked, max_votes)
    with transaction(open_database(db_url)) as session:
        expired = session.scalars(select(Assignment.annotator_id).where(Assignment.status == "expired")).all()
    assert len(expired) >= 5  # the quitters' leases ran out and went to others
