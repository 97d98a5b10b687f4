"""`rlhf-dist submit / status / logs / stop` against a real, private Ray head on loopback.

The head is started with `ray start --head` (own temp dir, free ports, token auth on with a
token file of its own), the tiny PPO config runs as a Ray job uploaded from this repo, and
only that head's processes are stopped at the end (never `ray stop`: it would stop every
Ray cluster on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the head runs from the same environment as the tests


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_range(size: int = 64) -> int:
    """First port of `size` consecutive free ports (the head's worker port range)."""
    for base in range(21000 + secrets.randbelow(2000) * 10, 45000, size):
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def _stop_head(temp_dir: str) -> None:
    """Terminate the processes of the head started in `temp_dir` (and their children) by pid."""
    import psutil

    me = os.getpid()
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid != me and any(temp_dir in arg for arg in (proc.info["cmdline"] or [])):
            roots.append(proc)
    procs = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)] if p.pid != me}
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=15)
    for proc in alive:
        proc.kill()


@pytest.fixture(scope="module")
def head():
    temp_dir = tempfile.mkdtemp(prefix="/tmp/rj")  # short: Ray's socket paths must stay < 107 chars
    token = Path(temp_dir) / "token"
    token.write_text(secrets.token_hex(16))
    gcs, dash, client, nm, om, rt, agrpc, alisten, metrics = _free_ports(9)
    workers = _free_range()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--temp-dir", temp_dir, "--num-cpus", "2",
           "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
           "--port", str(gcs), "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
           "--node-manager-port", str(nm), "--object-manager-port", str(om), "--runtime-env-agent-port", str(rt),
           "--dashboard-agent-grpc-port", str(agrpc), "--dashboard-agent-listen-port", str(alisten),
           "--metrics-export-port", str(metrics), "--min-worker-port", str(workers),
           "--max-worker-port", str(workers + 63), "--disable-usage-stats"]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"address": f"http://127.0.0.1:{dash}", "token": token, "temp_dir": temp_dir}
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _cli(args: list[str], token: Path | None, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `rlhf-dist ARGS` as a user would, from the repo, with or without the cluster's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")  # no ~/.ray/auth_token from the real home
    if token is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return subprocess.run([str(VENV_BIN / "rlhf-dist"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _jobs(head) -> list:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head["address"], headers={"Authorization": f"Bearer {head['token'].read_text()}"})
    return client.list_jobs()


def test_no_token_is_refused_with_a_hint(head, tmp_path):
    out = _cli(["status", "raysubmit_none", "--address", head["address"]], token=None, home=tmp_path)
    assert out.returncode == 4, out.stderr
    assert "token authentication" in out.stderr and "RAY_AUTH_TOKEN" in out.stderr


def test_typo_never_reaches_the_cluster(head, tmp_path):
    out = _cli(["submit", "configs/tiny.yaml", "--address", head["address"], "--ppo.stepz", "2"],
               token=head["token"], home=tmp_path)
    assert out.returncode == 2
    assert "ppo.stepz" in out.stderr and "did you mean 'steps'" in out.stderr
    assert _jobs(head) == []


def test_tiny_ppo_job_succeeds_with_artifacts(head, tmp_path):
    out_dir, cache = tmp_path / "out", tmp_path / "cache"
    started = time.perf_counter()
    run = _cli(["submit", "configs/tiny.yaml", "--address", head["address"], "--job-id", "tiny-ppo",
                "--env", f"RLHF_DIST_CACHE={cache}", "--ppo.steps", "2", "--data.demo_size", "32",
                "--run.output_dir", str(out_dir), "--tracking.progress", "false"],
               token=head["token"], home=tmp_path)
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "job tiny-ppo SUCCEEDED" in run.stdout, run.stdout[-2000:]
    assert "policy exported to" in run.stdout  # the job's own output was streamed back
    print(f"tiny PPO job: {seconds:.0f}s end to end")

    history = json.loads((out_dir / "ppo_metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2]
    assert (out_dir / "policy" / "config.json").is_file() and (out_dir / "metrics.jsonl").is_file()
    assert list(out_dir.rglob("step_000002")), "no checkpoint of the last step"
    # --env reached the job: the built-in tiny model was materialised in the given cache
    assert list(cache.glob("tiny-llama-*/config.json"))

    # the uploaded working dir holds the package but no virtualenv, .git or run outputs
    unpacked = [p for p in Path(head["temp_dir"]).glob("session_*/runtime_resources/working_dir_files/*") if p.is_dir()]
    assert unpacked
    names = {p.name for p in unpacked[0].iterdir()}
    assert {"rlhf_dist", "configs", "pyproject.toml"} <= names
    assert not names & {".venv", ".git", "runs"}, names
    assert (unpacked[0] / "rlhf_dist" / "models").is_dir()

    status = _cli(["status", "tiny-ppo", "--address", head["address"]], token=head["token"], home=tmp_path)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = _cli(["logs", "tiny-ppo", "--address", head["address"]], token=head["token"], home=tmp_path)
    assert logs.returncode == 0 and "policy exported to" in logs.stdout


def test_stop_a_running_job(head, tmp_path):
    run = _cli(["submit", "--config", "configs/tiny.yaml", "--address", head["address"], "--job-id", "to-stop",
                "--no-wait", "--ppo.steps", "500", "--data.demo_size", "32", "--run.output_dir", str(tmp_path / "o")],
               token=head["token"], home=tmp_path)
    assert run.returncode == 0 and "submitted to-stop" in run.stdout, run.stderr
    stop = _cli(["stop", "to-stop", "--wait", "--address", head["address"]], token=head["token"], home=tmp_path)
    assert stop.returncode == 0 and "STOPPED" in stop.stdout, stop.stdout + stop.stderr
    waited = _cli(["status", "to-stop", "--wait", "--address", head["address"]], token=head["token"], home=tmp_path)
    assert waited.returncode == 5  # STOPPED
