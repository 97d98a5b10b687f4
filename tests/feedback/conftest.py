"""Real servers for the feedback tests: uvicorn (`rlhf-dist feedback serve`) and a private PostgreSQL.

PostgreSQL comes from Debian's package (`.ci/run` installs it); each test gets a fresh database.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: run `apt-get install -y postgresql` (.ci/run does)")
    return Path(found[-1]).parent


def _as_postgres(*cmd: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(prefix + list(cmd), check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL server on a free loopback port for the whole session; its base URL."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "rlhf", "--no-sync")
    _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://rlhf@127.0.0.1:{port}"
    finally:
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast")
        shutil.rmtree(root, ignore_errors=True)


def new_pg_database(base_url: str) -> str:
    import psycopg

    name = "fb_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base_url}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """The same test on SQLite (a file in tmp_path) and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    return new_pg_database(request.getfixturevalue("postgres_url"))


class FeedbackServer:
    """`rlhf-dist feedback serve` in its own process, on a free port of 127.0.0.1."""

    def __init__(self, db_url: str, log_dir: Path, **options):
        self.db_url, self.log_dir = db_url, log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = {"rate_limit_per_minute": 100_000, **options}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "FeedbackServer":
        cmd = [sys.executable, "-m", "rlhf_dist.cli", "feedback", "serve", "--feedback.db_url", self.db_url,
               "--feedback.port", str(self.port), "--feedback.log_level", "warning"]
        for key, value in self.options.items():
            cmd += [f"--feedback.{key}", str(value)]
        env = {**os.environ, "RLHF_DIST_FEEDBACK_ADMIN_TOKEN": ADMIN_TOKEN}
        log = open(self.log_dir / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"feedback server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"feedback server did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace")[-3000:] for p in self.log_dir.glob(f"server-{self.port}.log"))

    def kill(self) -> None:
        """kill -9: no shutdown handler runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture
def serve(tmp_path):
    """serve(db_url, **feedback_options) -> a started FeedbackServer; all are stopped after the test."""
    servers: list[FeedbackServer] = []

    def start(db_url: str, **options) -> FeedbackServer:
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
                 kind: str = "training") -> None:
    import json

    r = admin.post("/api/v1/campaigns", json={"name": campaign, "kind": kind, "overlap": overlap})
    assert r.status_code == 201, r.text
    body = "".join(json.dumps(p) + "\n" for p in pairs)
    r = admin.post(f"/api/v1/campaigns/{campaign}/import", params={"filename": "pairs.jsonl"}, content=body)
    assert r.status_code == 201, r.text
    assert r.json()["added"] == len(pairs)


def add_annotator(admin: httpx.Client, name: str, role: str = "annotator") -> str:
    r = admin.post("/api/v1/annotators", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    return r.json()["token"]
