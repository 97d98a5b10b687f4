"""Before uploading: can the cluster's Python run rlhf-dist? One tiny Ray job without a working_dir.

    check_remote_python(client, "python3", required_modules(cfg))   # RemotePythonError with the fix

The job's code comes with the upload, but its dependencies (Ray, torch, DeepSpeed, vLLM, ...) must
already be installed for the interpreter the entrypoint names (`submit --python`). A missing one
would otherwise show up only after the upload, as an ImportError deep in the job's log.
"""

from __future__ import annotations

import shlex
import time
from urllib.parse import urlparse

from rlhf_dist.config import RLHFConfig

MARK = "rlhf-dist-preflight missing:"
BASE_MODULES = ("ray", "torch", "transformers", "pydantic", "yaml", "numpy")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class RemotePythonError(RuntimeError):
    """The cluster's interpreter is missing, or cannot import what rlhf-dist needs."""


def required_modules(cfg: RLHFConfig) -> list[str]:
    """Modules the job's driver and actors import for this config."""
    modules = list(BASE_MODULES)
    if "deepspeed" in {cfg.ppo.policy_train.backend, cfg.ppo.critic_train.backend, cfg.reward.train.backend}:
        modules.append("deepspeed")
    if cfg.rollout.backend == "vllm":
        modules.append("vllm")
    return modules


def is_local(address: str) -> bool:
    """True when the dashboard address points at this machine (then the local interpreter is the cluster's)."""
    return (urlparse(address if "://" in address else f"http://{address}").hostname or "") in LOCAL_HOSTS


def preflight_entrypoint(python: str, modules: list[str]) -> str:
    """A shell command that prints MARK + the missing modules and exits 3 when any is missing."""
    code = ("import importlib.util as u, sys; m = [n for n in sys.argv[1:] if u.find_spec(n) is None]; "
            f"print({MARK!r}, ','.join(m)); sys.exit(3 if m else 0)")
    return shlex.join([python, "-c", code, *modules])


def missing_from_logs(logs: str) -> list[str] | None:
    """The modules the preflight job reported missing; None when it never ran (no interpreter)."""
    for line in logs.splitlines():
        if line.startswith(MARK):
            return [m for m in line[len(MARK):].strip().split(",") if m]
    return None


def check_remote_python(client, python: str, modules: list[str], timeout_s: float = 180.0) -> None:
    """Run the preflight job; RemotePythonError naming the fix when `python` cannot import `modules`."""
    job_id = client.submit_job(entrypoint=preflight_entrypoint(python, modules), runtime_env={},
                               entrypoint_num_cpus=0, metadata={"rlhf_dist_stage": "preflight"})
    deadline = time.monotonic() + timeout_s
    while not (status := client.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:  # a busy cluster: do not block the submission on it
            client.stop_job(job_id)
            return
        time.sleep(0.5)
    if str(status.value) == "SUCCEEDED":
        return
    logs = client.get_job_logs(job_id)
    missing = missing_from_logs(logs)
    fix = ("pass --python with the interpreter of the environment that has rlhf-dist's requirements on the "
           "cluster (e.g. --python /opt/venv/bin/python; on the head, `dirname $(which ray)` shows it), or install "
           "them there (pip install -r requirements/base.txt ...), or skip this check with --no-preflight")
    if missing is None:
        last = (logs.strip().splitlines() or ["no output"])[-1]
        raise RemotePythonError(f"--python {python}: the cluster could not run it ({last}); {fix}")
    raise RemotePythonError(f"--python {python} on the cluster cannot import {', '.join(missing)}; {fix}")
