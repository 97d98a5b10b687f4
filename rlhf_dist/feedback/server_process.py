"""Run the feedback service and a private PostgreSQL on this machine, on free loopback ports.

Used by the tests, the benchmark (bench/feedback_service.py) and anything that needs the service
as a real process: `FeedbackServerProcess` is `rlhf-dist feedback serve` in a child process,
`LocalPostgres` a throw-away PostgreSQL cluster from Debian's `postgresql` package.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from rlhf_dist.utils import free_port


class LocalPostgres:
    """A private PostgreSQL server in a temp dir (as the `postgres` user when run as root)."""

    def __init__(self, user: str = "rlhf"):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed: `apt-get install -y postgresql`")
        self.bin = Path(found[-1]).parent
        self.user, self.port = user, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
        self.url = f"postgresql+psycopg://{user}@127.0.0.1:{self.port}"

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + list(cmd), check=True, capture_output=True, timeout=120)

    def start(self) -> "LocalPostgres":
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = str(self.root / "data")
        self._run(str(self.bin / "initdb"), "-D", data, "-A", "trust", "-U", self.user, "--no-sync")
        # fsync off: a throw-away test/bench server (durability across kill -9 of the *service* holds anyway)
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                  "-c fsync=off", "start")
        return self

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = "fb_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.url}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "stop", "-m", "fast")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class FeedbackServerProcess:
    """`rlhf-dist feedback serve` in a child process on a free port of 127.0.0.1."""

    def __init__(self, db_url: str, log_dir: Path, admin_token: str | None, **options):
        """admin_token: the value of RLHF_DIST_FEEDBACK_ADMIN_TOKEN for the server; None: the variable unset."""
        self.db_url, self.log_dir, self.admin_token = db_url, Path(log_dir), admin_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.log_path = self.log_dir / f"feedback-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "FeedbackServerProcess":
        cmd = [sys.executable, "-m", "rlhf_dist.cli", "feedback", "serve", "--feedback.db_url", self.db_url,
               "--feedback.port", str(self.port), "--feedback.log_level", "warning"]
        for key, value in self.options.items():
            cmd += [f"--feedback.{key}", str(value)]
        env = {k: v for k, v in os.environ.items() if k != "RLHF_DIST_FEEDBACK_ADMIN_TOKEN"}
        if self.admin_token is not None:
            env["RLHF_DIST_FEEDBACK_ADMIN_TOKEN"] = self.admin_token
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
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
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

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

    def client(self, token: str | None = None) -> httpx.Client:
        token = (self.admin_token or "") if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)
