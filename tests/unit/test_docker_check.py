"""docker/check_cpu.py (make docker-check) without Docker: its options, the Dockerfile invariants it relies on,
the stand-in's pip settings and wheel server, and how it judges a run dir. The build + run itself is
`make docker-check` (minutes; not part of `make test`)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "check_cpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load()
standin = sys.modules["standin"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--config", "configs/nope.yaml"], "--config configs/nope.yaml"),
    (["--config", "../../etc/passwd"], "--config ../../etc/passwd"),
    (["--build-only", "--no-build"], "--build-only and --no-build"),
    (["--base", "debian:12", "--standin"], "--base debian:12 and --standin"),
    (["--wheels-port", "80"], "--wheels-port 80"),
    (["--wheels", "/no/such/dir"], "--wheels /no/such/dir"),
    (["--command", "demo"], "--command"),
])
def test_bad_options_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_dockerfile_base_is_a_build_arg_defaulting_to_the_official_python_image():
    text = check.DOCKERFILE.read_text()
    base = check.default_base()
    assert base.startswith("python:3.11.") and base.endswith("-slim-bookworm")
    assert [line for line in text.splitlines() if line.startswith("FROM ")] == ["FROM ${BASE_IMAGE}"]
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE}")
    # the stand-in is built for the same Debian release, whose python3 is the image's minor version (3.11)
    assert standin.suite_of(base) == "bookworm"
    # BuildKit's `# syntax=` line would pull a frontend image from a registry; the classic builder ignores it
    assert "# syntax=" not in text and "# syntax=" not in (ROOT / "docker" / "Dockerfile").read_text()


def test_this_machines_pip_settings_stay_out_of_the_dockerfile():
    """The CA bundle and the local wheel server go into the local stand-in only: never into a pushed image."""
    for name in ("Dockerfile.cpu", "Dockerfile"):
        text = (ROOT / "docker" / name).read_text().lower()
        for word in ("cert", ".crt", "pip.conf", "find-links", "127.0.0.1", "/opt/wheels"):
            assert word not in text, f"{name} mentions {word}"


def test_standin_pip_conf_and_labels():
    conf = standin.pip_conf(ca_bundle=True, port=38417)
    assert conf.splitlines() == ["[global]", f"cert = {standin.CA_IN_IMAGE}", "find-links = http://127.0.0.1:38417/"]
    assert standin.pip_conf(ca_bundle=False, port=None) == "[global]\n"
    changes = standin.import_changes(38417)
    assert "LABEL org.rlhf-dist.standin=local-only" in changes and f"LABEL {standin.PORT_LABEL}=38417" in changes
    with pytest.raises(standin.CheckError, match="alpine"):
        standin.suite_of("python:3.11-alpine")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wheel_server_serves_the_dir_on_loopback_and_names_a_busy_port(tmp_path):
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"wheel")
    port = _free_port()
    with standin.serve_wheels(str(tmp_path), port):
        listing = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "torch-2.13.0%2Bcpu-cp311" in listing  # what pip's find-links parses
        with pytest.raises(standin.CheckError, match=f"127.0.0.1:{port}"):
            with standin.serve_wheels(str(tmp_path), port):
                pass
    with pytest.raises(OSError):  # shut down after the build
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def _run_dir(root: Path, steps: list[int], with_policy: bool = True) -> Path:
    job = root / "job"
    (job / "policy").mkdir(parents=True)
    if with_policy:
        (job / "policy" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (job / "ppo_metrics.json").write_text(json.dumps({"history": [{"step": s} for s in steps]}))
    (job / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in steps))
    (job / "summary.json").write_text(json.dumps({"rm_accuracy": 0.7, "win_rate": 0.5, "kl": 0.1}))
    return job


def test_a_finished_run_dir_passes(tmp_path):
    checks = check.check_outputs(_run_dir(tmp_path, [1, 2, 3]), "pipeline")
    assert checks["ppo_steps"] == 3 and check.verdict({"run_exit": 0, "checks": checks}) == "PASS"


def test_a_run_dir_without_the_exported_policy_or_with_gaps_fails(tmp_path):
    checks = check.check_outputs(_run_dir(tmp_path / "a", [1, 2, 3], with_policy=False), "pipeline")
    assert "policy/config.json: missing" in check.verdict({"run_exit": 0, "checks": checks})
    checks = check.check_outputs(_run_dir(tmp_path / "b", [1, 3]), "ppo")
    assert "ppo_metrics.json: steps [1, 3]" in check.verdict({"run_exit": 0, "checks": checks})
    assert check.verdict({"run_exit": 1, "checks": {}}) == "FAIL: the job exited 1"
