"""Real servers for the feedback tests: uvicorn (`rlhf-dist feedback serve`) and a private PostgreSQL.

PostgreSQL comes from Debian's package (`.ci/run` installs it); each test gets a fresh database.
"""

from __future__ import annotations

import json
import shutil
import uuid

import httpx
import pytest

from rlhf_dist.feedback.server_process import FeedbackServerProcess, LocalPostgres

ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def postgres():
    try:
        server = LocalPostgres().start()
    except RuntimeError as err:
        pytest.fail(f"{err} (.ci/run installs it)")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same test on SQLite (a file in tmp_path) and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def browser():
    """Debian's chromium driven by Playwright (no browser download)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install -y chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def FeedbackServer(db_url: str, log_dir, **options) -> FeedbackServerProcess:  # noqa: N802 - a factory
    return FeedbackServerProcess(db_url, log_dir, ADMIN_TOKEN, **{"rate_limit_per_minute": 100_000, **options})


@pytest.fixture
def serve(tmp_path):
    """serve(db_url, **feedback_options) -> a started server; all are stopped after the test."""
    servers: list[FeedbackServerProcess] = []

    def start(db_url: str, **options) -> FeedbackServerProcess:
        server = FeedbackServer(db_url, tmp_path, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def make_pairs(n: int, prefix: str = "p") -> list[dict]:
    return [{"prompt": f"{prefix} prompt {i}", "response_a": f"{prefix} A{i}", "response_b": f"{prefix} B{i}"}
            for i in range(n)]


def import_pairs(admin: httpx.Client, campaign: str, pairs: list[dict], overlap: int = 1,
                 kind: str = "training", max_votes: int | None = None) -> None:
    r = admin.post("/api/v1/campaigns", json={"name": campaign, "kind": kind, "overlap": overlap,
                                              "max_votes": max_votes})
    assert r.status_code == 201, r.text
    body = "".join(json.dumps(p) + "\n" for p in pairs)
    r = admin.post(f"/api/v1/campaigns/{campaign}/import", params={"filename": "pairs.jsonl"}, content=body)
    assert r.status_code == 201, r.text
    assert r.json()["added"] == len(pairs)


def add_annotator(admin: httpx.Client, name: str, role: str = "annotator") -> str:
    r = admin.post("/api/v1/annotators", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    return r.json()["token"]
