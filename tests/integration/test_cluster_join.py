"""`rlhf-dist ppo --cluster.address HOST:PORT` against a real token-auth Ray head on loopback, from shells set up
wrong: one line saying what to set, exit 2, quickly (no 20 s of Ray's retries, no traceback), nothing written.

The head is launch/start_head.sh (token auth on, a token file of its own) on free 127.0.0.1 ports; only its
own processes are stopped at the end, by PID (never `ray stop`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_dist.utils import free_ports
from tests.integration.test_submit import REPO, VENV_BIN, loopback_head

pytestmark = pytest.mark.slow
MAX_SECONDS = 25  # start-up imports on a busy 2-core box; Ray's own retry alone takes 20 s more


@pytest.fixture(scope="module")
def head():
    with loopback_head(num_cpus=1) as started:
        yield {"address": started["gcs"], "token": started["token"], "dashboard": started["dashboard"]}


def _shell(home: Path, **env: str) -> dict[str, str]:
    """A user's shell: no Ray auth or address settings but `env`, a HOME of its own (no ~/.ray/auth_token)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    return {**base, "HOME": str(home), "PYTHONUNBUFFERED": "1", **env}


def _ppo(address: str, out: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([str(VENV_BIN / "rlhf-dist"), "ppo", "configs/tiny.yaml", "--cluster.address", address,
                           "--run.output_dir", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    return done, time.perf_counter() - started


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("rlhf-dist: ")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "gcs_client.cc" not in done.stderr  # Ray never started its connection retries
    return lines[0]


@pytest.mark.parametrize("case", ["no token, auth mode unset", "token file, auth mode unset",
                                  "auth mode token, no token", "wrong token"])
def test_a_shell_without_the_right_token_is_told_what_to_set(case, head, tmp_path):
    env = {"no token, auth mode unset": {}, "auth mode token, no token": {"RAY_AUTH_MODE": "token"},
           "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}}.get(case, {})
    if case == "token file, auth mode unset":
        (tmp_path / ".ray").mkdir()
        shutil.copy(head["token"], tmp_path / ".ray" / "auth_token")
    out = tmp_path / "run"
    done, seconds = _ppo(head["address"], out, _shell(tmp_path, **env))
    line = _one_line(done)
    assert done.returncode == 2 and seconds < MAX_SECONDS, (done.returncode, seconds)
    assert f"cluster.address {head['address']}" in line
    expected = {"no token, auth mode unset": ["RAY_AUTH_MODE is unset", "set RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN"],
                "token file, auth mode unset": ["set RAY_AUTH_MODE=token", str(tmp_path / ".ray" / "auth_token")],
                "auth mode token, no token": ["no token found", "RAY_AUTH_TOKEN_PATH"],
                "wrong token": ["refused the token from RAY_AUTH_TOKEN", "`ray get-auth-token`"]}[case]
    for piece in expected:
        assert piece in line, (piece, line)
    assert not out.exists()  # checked before anything was written


def test_an_unreachable_address_is_one_line(tmp_path):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    done, seconds = _ppo(address, tmp_path / "run", _shell(tmp_path))
    line = _one_line(done)
    assert done.returncode == 2 and seconds < MAX_SECONDS
    assert f"cluster.address {address}: cannot reach a Ray head (connection refused" in line
    assert not (tmp_path / "run").exists()


def test_the_dashboard_port_is_named_as_not_the_gcs(head, tmp_path):
    env = _shell(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head["token"]))
    done, seconds = _ppo(head["dashboard"], tmp_path / "run", env)
    line = _one_line(done)
    assert done.returncode == 2 and seconds < MAX_SECONDS
    assert "something answers there, but not a Ray head's GCS" in line and "not the dashboard's (8265)" in line
    assert not (tmp_path / "run").exists()


def test_the_right_token_passes_the_check(head, tmp_path):
    """No false alarm: with RAY_AUTH_MODE=token and the head's token, the check lets ray.init go on."""
    probe = ("import sys; from rlhf_dist.driver.join import check_join; check_join(sys.argv[1]); print('ok')")
    env = _shell(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head["token"]))
    done = subprocess.run([sys.executable, "-c", probe, head["address"]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
