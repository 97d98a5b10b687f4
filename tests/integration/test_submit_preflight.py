"""`submit`'s preflight and exit codes against a real, private Ray head (tests/integration/test_submit.py's fixture):
a --python that cannot import the requirements stops before the upload (exit 7, the module named), a missing
interpreter likewise, an unknown job id is exit 6, and the default --python passes the check."""

from __future__ import annotations

import sys

import pytest

from tests.integration.test_submit import _cli, _jobs, head  # noqa: F401  (the module-scoped head fixture)

pytestmark = pytest.mark.slow


def test_python_without_the_requirements_stops_before_the_upload(head, tmp_path):  # noqa: F811
    bare = tmp_path / "bare-python"  # an interpreter that sees none of the venv's packages
    bare.write_text(f"#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -I -S \"$@\"\n")
    bare.chmod(0o755)
    out = _cli(["submit", "configs/tiny.yaml", "--address", head["address"], "--python", str(bare),
                "--run.output_dir", str(tmp_path / "o")], token=head["token"], home=tmp_path)
    assert out.returncode == 7, out.stdout + out.stderr
    assert "cannot import ray, torch" in out.stderr and "--python" in out.stderr and "uploading" not in out.stdout
    missing = _cli(["submit", "configs/tiny.yaml", "--address", head["address"], "--python", "/nonexistent/python",
                    "--run.output_dir", str(tmp_path / "o")], token=head["token"], home=tmp_path)
    assert missing.returncode == 7 and "could not run it" in missing.stderr, missing.stderr
    entrypoints = [j.entrypoint for j in _jobs(head)]
    assert not [e for e in entrypoints if "rlhf_dist.cli" in e]  # only the preflight jobs ran


def test_default_python_passes_and_unknown_job_is_6(head, tmp_path):  # noqa: F811
    out = _cli(["submit", "configs/tiny.yaml", "--address", head["address"], "--no-wait", "--job-id", "pf-ok",
                "--ppo.steps", "1", "--data.demo_size", "32", "--run.output_dir", str(tmp_path / "o")],
               token=head["token"], home=tmp_path)
    assert out.returncode == 0 and "submitted pf-ok" in out.stdout, out.stderr
    stop = _cli(["stop", "pf-ok", "--wait", "--address", head["address"]], token=head["token"], home=tmp_path)
    assert stop.returncode == 0
    unknown = _cli(["status", "no-such-job", "--address", head["address"]], token=head["token"], home=tmp_path)
    assert unknown.returncode == 6, unknown.stderr
