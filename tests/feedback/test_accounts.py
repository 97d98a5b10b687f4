"""Accounts an admin can manage, over HTTP and the CLI against a running server, on SQLite and PostgreSQL:
list / disable / rotate take effect at once, the environment's admin token lives only as long as the variable,
short admin tokens are refused at start, and wrong tokens are limited per client address."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from sqlalchemy import func, select, update

from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.server_process import FeedbackServerProcess
from rlhf_dist.feedback.tables import Annotator
from rlhf_dist.utils import free_port
from tests.feedback.conftest import ADMIN_TOKEN, add_annotator, import_pairs, make_pairs

pytestmark = pytest.mark.slow


def cli(*args: str, expect: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", *args], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == expect, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _statuses(admin: httpx.Client) -> dict[str, str]:
    r = admin.get("/api/v1/annotators")
    assert r.status_code == 200, r.text
    return {a["name"]: a["status"] for a in r.json()}


def test_disable_and_rotate_over_the_api_take_effect_at_once(db_url, serve):
    server = serve(db_url)
    admin = server.client()
    import_pairs(admin, "c1", make_pairs(3))
    alice_token, bob_token = add_annotator(admin, "alice"), add_annotator(admin, "bob")
    alice, bob = server.client(alice_token), server.client(bob_token)
    assert alice.get("/api/v1/me").status_code == 200 and bob.get("/api/v1/me").status_code == 200
    assert _statuses(admin) == {"admin": "environment", "alice": "active", "bob": "active"}
    assert alice.get("/api/v1/annotators").status_code == 403  # annotators cannot list or change accounts
    assert alice.post("/api/v1/annotators/bob/disable").status_code == 403

    r = admin.post("/api/v1/annotators/alice/disable")
    assert r.status_code == 200 and r.json()["status"] == "disabled", r.text
    for method, path in [("GET", "/api/v1/me"), ("GET", "/api/v1/tasks/next?campaign=c1"), ("POST", "/api/v1/votes")]:
        assert alice.request(method, path, json={}).status_code == 401, path  # at once, everywhere

    r = admin.post("/api/v1/annotators/bob/rotate")
    assert r.status_code == 200, r.text
    new_bob = r.json()["token"]
    assert new_bob != bob_token and len(new_bob) >= 40
    assert bob.get("/api/v1/me").status_code == 401
    assert server.client(new_bob).get("/api/v1/me").json()["name"] == "bob"
    assert _statuses(admin) == {"admin": "environment", "alice": "disabled", "bob": "active"}

    r = admin.post("/api/v1/annotators/alice/rotate")  # a new token enables a disabled account again
    assert server.client(r.json()["token"]).get("/api/v1/tasks/next", params={"campaign": "c1"}).status_code == 200
    assert alice.get("/api/v1/me").status_code == 401  # the old token stays dead

    r = admin.post("/api/v1/annotators/nobody/disable")
    assert (r.status_code, r.json()["field"]) == (404, "name")
    for verb in ("disable", "rotate"):  # the environment's admin: change or unset the variable instead
        r = admin.post(f"/api/v1/annotators/admin/{verb}")
        assert r.status_code == 409 and "RLHF_DIST_FEEDBACK_ADMIN_TOKEN" in r.json()["error"], r.text
    with transaction(open_database(db_url)) as session:
        hashes = set(session.scalars(select(Annotator.token_hash)))
    assert hashlib.sha256(bob_token.encode()).hexdigest() not in hashes
    assert hashlib.sha256(new_bob.encode()).hexdigest() in hashes


def test_cli_list_disable_rotate_against_a_running_server(db_url, serve):
    server = serve(db_url)
    db = ["--feedback.db_url", db_url]
    token = cli("feedback", "annotator", "add", "carol", *db).stdout.strip().splitlines()[-1]
    carol = server.client(token)
    assert carol.get("/api/v1/me").status_code == 200

    listed = cli("feedback", "annotator", "list", *db).stdout
    rows = {line.split()[0]: line.split()[1:] for line in listed.strip().splitlines()[1:]}
    assert rows["carol"][:2] == ["annotator", "active"] and rows["admin"][:2] == ["admin", "environment"]
    assert token not in listed

    assert "disabled" in cli("feedback", "annotator", "disable", "carol", *db).stdout
    assert carol.get("/api/v1/me").status_code == 401  # the server sees the CLI's change at once
    new = cli("feedback", "annotator", "rotate", "carol", *db).stdout.strip().splitlines()[-1]
    assert server.client(new).get("/api/v1/me").json()["name"] == "carol"
    assert carol.get("/api/v1/me").status_code == 401

    r = cli("feedback", "annotator", "disable", "nobody", *db, expect=2)
    assert r.stderr.strip().splitlines() == ["rlhf-dist feedback annotator: NAME: no annotator named 'nobody' "
                                             "(known: admin, carol)"]
    r = cli("feedback", "annotator", "rotate", "admin", *db, expect=2)
    assert len(r.stderr.strip().splitlines()) == 1 and "RLHF_DIST_FEEDBACK_ADMIN_TOKEN" in r.stderr
    r = cli("feedback", "annotator", "add", "admin", *db, expect=2)  # reserved for the environment's admin
    assert "NAME:" in r.stderr and "reserved" in r.stderr


def test_the_environment_admin_token_works_only_while_it_is_set(db_url, tmp_path):
    token = "env-admin-" + uuid.uuid4().hex
    with_var = FeedbackServerProcess(db_url, tmp_path, token).start()
    try:
        assert with_var.client().get("/api/v1/stats").status_code == 200
    finally:
        with_var.stop()
    with transaction(open_database(db_url)) as session:
        stored = session.scalar(select(Annotator.token_hash).where(Annotator.name == "admin"))
        assert stored is None  # never persisted as a usable credential
        # what earlier versions did: the variable's token stored as user admin's token
        session.execute(update(Annotator).where(Annotator.name == "admin")
                        .values(token_hash=hashlib.sha256(token.encode()).hexdigest()))

    without = FeedbackServerProcess(db_url, tmp_path, admin_token=None).start()
    try:
        old = without.client(token)
        assert old.get("/api/v1/stats").status_code == 401
        assert old.post("/api/v1/annotators", json={"name": "mallory", "role": "admin"}).status_code == 401
        assert old.post("/api/v1/campaigns/c1/export").status_code == 401
    finally:
        without.stop()
    with transaction(open_database(db_url)) as session:
        assert session.scalar(select(func.count()).select_from(Annotator).where(Annotator.name == "mallory")) == 0


def test_a_short_admin_token_is_refused_at_start(tmp_path):
    db_file = tmp_path / "fb.sqlite"
    short = "s3cret-" + "x" * 24  # 31 characters
    env = {**os.environ, "RLHF_DIST_FEEDBACK_ADMIN_TOKEN": short}
    try:
        r = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", "feedback", "serve", "--feedback.db_url",
                            f"sqlite:///{db_file}", "--feedback.port", str(free_port())],
                           capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the service started with a 31-character admin token")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "RLHF_DIST_FEEDBACK_ADMIN_TOKEN" in lines[0] and "32" in lines[0], r.stderr
    assert short not in r.stderr + r.stdout and not db_file.exists()


def test_failed_logins_are_limited_per_client_address(db_url, serve):
    server = serve(db_url, login_failures_per_minute=5)
    wrong = server.client("not-a-token")
    assert [wrong.get("/api/v1/me").status_code for _ in range(7)] == [401] * 5 + [429] * 2
    r = server.client().get("/api/v1/me")  # even the right token, from this address, until the minute is over
    assert r.status_code == 429 and "login_failures_per_minute" in r.json()["error"]
    other = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    assert other.get("/api/v1/me").json()["name"] == "admin"  # another address is not affected
