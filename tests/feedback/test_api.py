"""The feedback API over HTTP against a real uvicorn server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import func, select

from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Annotator, Assignment, Vote
from tests.feedback.conftest import ADMIN_TOKEN, add_annotator, import_pairs, make_pairs

pytestmark = pytest.mark.slow


def _votes_in_db(db_url: str) -> list[Vote]:
    with transaction(open_database(db_url)) as session:
        return list(session.scalars(select(Vote).order_by(Vote.id)))


def _vote(client, task_id, choice="left", confidence=0.85, request_id=None, **extra):
    body = {"task_id": task_id, "choice": choice, "confidence": confidence,
            "request_id": request_id or f"req-{task_id}-{time.monotonic_ns()}", **extra}
    return client.post("/api/v1/votes", json=body)


def test_vote_lands_once_with_the_left_right_mapping(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    assert server.client(token="").get("/healthz").json() == {"status": "ok"}
    import_pairs(admin, "c1", make_pairs(2))
    alice = server.client(add_annotator(admin, "alice"))

    task = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert set(task) >= {"task_id", "prompt", "left", "right"}
    assert alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()["task_id"] == task["task_id"]  # reload
    first = _vote(alice, task["task_id"], "left", 0.7, "retry-me", reasoning="more polite")
    assert first.status_code == 201, first.text
    again = _vote(alice, task["task_id"], "left", 0.7, "retry-me", reasoning="more polite")
    assert again.status_code == 200 and again.json()["vote_id"] == first.json()["vote_id"]

    votes = _votes_in_db(db_url)
    assert len(votes) == 1
    left_was_a = task["left"].split()[-1].startswith("A")  # responses are "p A<i>" / "p B<i>"
    assert votes[0].left_is_a == left_was_a
    assert votes[0].preference == (0 if left_was_a else 1)  # "left" resolved to the response shown there
    assert votes[0].confidence == 0.7 and votes[0].reasoning == "more polite" and votes[0].seconds_spent >= 0

    second = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert second["task_id"] != task["task_id"]
    assert _vote(alice, second["task_id"], "tie").status_code == 201
    assert alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 204  # all done for alice
    assert [v.preference for v in _votes_in_db(db_url)][1] == 2


def test_bad_input_names_the_field_and_writes_nothing(db_url, serve):
    server = serve(db_url, lease_seconds=2)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(3))
    alice = server.client(add_annotator(admin, "alice"))
    task = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()

    cases = [
        ({"choice": "up"}, 422, "choice"),
        ({"confidence": 1.5}, 422, "confidence"),
        ({"confidence": "high"}, 422, "confidence"),
        ({"request_id": ""}, 422, "request_id"),
        ({"task_id": 999_999}, 404, "task_id"),
    ]
    for change, status, field in cases:
        body = {"task_id": task["task_id"], "choice": "left", "confidence": 0.9, "request_id": "r1", **change}
        r = alice.post("/api/v1/votes", json=body)
        assert (r.status_code, r.json()["field"]) == (status, field), (change, r.text)
    r = alice.post("/api/v1/votes", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert alice.get("/api/v1/tasks/next", params={"campaign": "nope"}).json()["field"] == "campaign"
    assert _votes_in_db(db_url) == []

    assert _vote(alice, task["task_id"], request_id="first").status_code == 201
    r = _vote(alice, task["task_id"], request_id="second")  # a second vote on the same pair
    assert r.status_code == 409 and r.json()["field"] == "task_id"

    expiring = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    time.sleep(2.5)
    r = _vote(alice, expiring["task_id"])
    assert r.status_code == 409 and "expired" in r.json()["error"]
    assert len(_votes_in_db(db_url)) == 1  # nothing half-written


def test_tokens_roles_limits_and_privacy(db_url, serve):
    server = serve(db_url, max_body_kb=4, rate_limit_per_minute=40)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(2), overlap=2)
    alice_token, bob_token = add_annotator(admin, "alice"), add_annotator(admin, "bob")
    alice, bob = server.client(alice_token), server.client(bob_token)

    assert server.client(token="").get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 401
    assert server.client(token="wrong").get("/api/v1/me").status_code == 401
    for method, path in [("GET", "/api/v1/stats"), ("POST", "/api/v1/annotators"), ("POST", "/api/v1/campaigns"),
                         ("POST", "/api/v1/campaigns/c1/export")]:
        assert alice.request(method, path, json={"name": "x"}).status_code == 403, path
    task = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert _vote(alice, task["task_id"]).status_code == 201
    assert bob.get("/api/v1/votes", params={"annotator": "alice"}).status_code == 403
    assert bob.get("/api/v1/votes").json() == []  # only bob's own
    assert [v["annotator"] for v in admin.get("/api/v1/votes", params={"annotator": "alice"}).json()] == ["alice"]

    r = _vote(alice, task["task_id"], reasoning="x" * 5000)
    assert r.status_code == 413 and r.json()["field"] == "body"

    with transaction(open_database(db_url)) as session:
        hashes = set(session.scalars(select(Annotator.token_hash)))
    assert alice_token not in hashes and hashlib.sha256(alice_token.encode()).hexdigest() in hashes

    statuses = [bob.get("/api/v1/me").status_code for _ in range(45)]
    assert statuses[0] == 200 and statuses[-1] == 429 and set(statuses) == {200, 429}
    assert alice.get("/api/v1/me").status_code == 200  # the limit is per token


def test_overlap_distinct_annotators_and_expired_leases(db_url, serve):
    server = serve(db_url, lease_seconds=2)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(1), overlap=2)
    a1, a2, a3 = (server.client(add_annotator(admin, n)) for n in ("a1", "a2", "a3"))
    t1 = a1.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    t2 = a2.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert a3.get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 204  # both slots leased
    assert _vote(a1, t1["task_id"]).status_code == 201
    assert a1.get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 204  # never the same pair twice

    time.sleep(2.5)  # a2's lease runs out: the slot goes back to the queue
    t3 = a3.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert t3["prompt"] == t2["prompt"]
    assert _vote(a2, t2["task_id"]).status_code == 409
    assert _vote(a3, t3["task_id"]).status_code == 201
    assert a2.get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 204
    votes = _votes_in_db(db_url)
    assert len(votes) == 2 and len({v.annotator_id for v in votes}) == 2

    with transaction(open_database(db_url)) as session:
        assert session.scalar(select(func.count()).select_from(Assignment).where(Assignment.status == "expired")) == 1


def test_skip_gives_the_pair_to_someone_else(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(1))
    a1, a2 = server.client(add_annotator(admin, "a1")), server.client(add_annotator(admin, "a2"))
    t1 = a1.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert a2.get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 204
    assert a1.post(f"/api/v1/tasks/{t1['task_id']}/skip").status_code == 200
    assert a1.get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 204
    assert a2.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()["prompt"] == t1["prompt"]
    assert a2.post(f"/api/v1/tasks/{t1['task_id']}/skip").json()["field"] == "task_id"  # not a2's task


def test_text_is_stored_verbatim_and_the_docs_are_served(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    nasty = {"prompt": "Say <b>hi</b>", "response_a": "<script>alert(1)</script>",
             "response_b": "<img src=x onerror=alert(2)> & \u00e9\u4e2d"}
    import_pairs(admin, "c1", [nasty])
    alice = server.client(add_annotator(admin, "alice"))
    task = alice.get("/api/v1/tasks/next", params={"campaign": "c1"}).json()
    assert {task["left"], task["right"]} == {nasty["response_a"], nasty["response_b"]}
    page = server.client(token="").get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "/api/v1/votes" in server.client(token="").get("/openapi.json").json()["paths"]
    assert server.client(token="").get("/docs").status_code == 200


def test_admin_import_errors_name_file_line_and_field(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    body = ('{"prompt": "ok", "response_a": "a", "response_b": "b"}\n'
            '{"prompt": 3, "response_a": "a", "response_b": "b"}\n')
    r = admin.post("/api/v1/campaigns/c9/import", params={"filename": "mine.jsonl"}, content=body)
    assert r.status_code == 422 and "mine.jsonl:2: prompt" in r.json()["error"]
    r = admin.post("/api/v1/campaigns/c9/import", params={"filename": "mine.txt"}, content=body)
    assert r.status_code == 422 and r.json()["field"] == "filename"
    assert admin.get("/api/v1/stats").json() == []  # nothing written
    r = admin.post("/api/v1/annotators", json={"name": "admin"})
    assert r.status_code == 409 and r.json()["field"] == "name"
    assert ADMIN_TOKEN not in server.log()
