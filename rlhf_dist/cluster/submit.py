"""Submit a stage to a remote Ray cluster as a Ray job, from any machine that reaches its dashboard.

    client = make_client("http://head:8265")          # adds the cluster's auth token when there is one
    job_id = client.submit_job(entrypoint=build_entrypoint("ppo", "configs/x.yaml", overrides),
                               runtime_env=build_runtime_env(Path("."), ["WANDB_API_KEY"]))
    status = stream_until_done(client, job_id)        # logs to stdout; JobStatus at the end

Ray 2.60 turns token authentication on by default: the dashboard answers 401 without
`Authorization: Bearer <token>`. The token is read like Ray reads it (RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) or from --token-file.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO


# Never uploaded: weights, checkpoints, run outputs, VCS data, virtualenvs, caches (gitignore syntax;
# a leading "/" anchors at the working dir: "/models/" must not drop the package's rlhf_dist/models/).
DEFAULT_EXCLUDES = [
    ".git/", ".venv/", "venv/", ".env/", "env/", "__pycache__/", "*.egg-info/", ".pytest_cache/", ".cache/",
    "runs/", "outputs/", "checkpoints/", "wandb/", "/bench/out/", "/models/",
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx", "*.h5", "*.npz",
]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
UPLOAD_LIMIT = 500 * 1024**2  # Ray refuses working_dir packages near its 512 MiB gRPC limit
# Exit codes of `submit` (and `status --wait`): the job's final state.
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 5}
EXIT_USAGE = 2  # bad config, working dir, --env or arguments: nothing reached the cluster
EXIT_UNREACHABLE = 4  # the dashboard cannot be reached, or refused the token
EXIT_NO_SUCH_JOB = 6  # status/logs/stop: the cluster has no job with that id
EXIT_REMOTE_PYTHON = 7  # the cluster's --python cannot import rlhf-dist's requirements (cluster/preflight.py)


class SubmitError(RuntimeError):
    """Nothing was submitted: bad working dir, config outside it, bad --env, upload too big."""


class ClusterUnreachable(SubmitError):
    """The dashboard cannot be reached, or it refused the (missing) token."""


def read_token(token_file: str | None = None) -> str | None:
    """The cluster's auth token: --token-file, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise SubmitError(f"--token-file {path}: no such file")
        return path.read_text().strip() or None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for candidate in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text().strip() or None
    return None


def make_client(address: str, token_file: str | None = None):
    """A JobSubmissionClient for `address`; raises SubmitError with a hint when it cannot connect."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    token = read_token(token_file)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as err:
        hint = ("the token given was refused" if token else
                "no token found: copy the head's token (`ray get-auth-token` on the head) into ~/.ray/auth_token, "
                "or set RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, or pass --token-file")
        raise ClusterUnreachable(f"{address}: the cluster requires token authentication; {hint}\n({err})") from None
    except ConnectionError as err:
        raise ClusterUnreachable(f"cannot reach the Ray dashboard at {address}: {err}. Is the head running, and is "
                          "its dashboard port reachable from here (e.g. `ssh -L 8265:localhost:8265 HEAD`)?") from None


def _excluded(rel: Path, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore-style match for the pattern forms DEFAULT_EXCLUDES uses (name/, *.ext, a/b/)."""
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pat = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        if "/" in pat:
            if fnmatch.fnmatch(rel.as_posix(), pat.lstrip("/")):
                return True
        elif fnmatch.fnmatch(rel.name, pat):
            return True
    return False


def upload_files(working_dir: Path, excludes: list[str]) -> list[tuple[Path, int]]:
    """(relative path, bytes) of every file the working_dir package will hold."""
    out = []
    for root, dirs, files in os.walk(working_dir):
        base = Path(root).relative_to(working_dir)
        dirs[:] = [d for d in dirs if not _excluded(base / d, True, excludes)]
        for name in files:
            rel = base / name
            if not _excluded(rel, False, excludes) and not (Path(root) / name).is_symlink():
                out.append((rel, (Path(root) / name).stat().st_size))
    return out


def build_runtime_env(working_dir: Path, env: list[str], extra_excludes: list[str] = ()) -> dict:
    """working_dir (excludes applied) + env vars; `env` items are KEY=VALUE, or KEY to copy the local value."""
    env_vars = {"PYTHONUNBUFFERED": "1",
                # the driver's ray.init adds its own env vars (driver/actors.py): merge them with the job's
                # instead of failing on a shared key
                "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            if key not in os.environ:
                raise SubmitError(f"--env {key}: not set in this shell (give --env {key}=VALUE)")
            value = os.environ[key]
        if not key.replace("_", "").isalnum():
            raise SubmitError(f"--env {item!r}: not a valid variable name")
        env_vars[key] = value
    return {"working_dir": str(working_dir), "excludes": [*DEFAULT_EXCLUDES, *extra_excludes], "env_vars": env_vars}


def check_upload(working_dir: Path, excludes: list[str]) -> tuple[int, int]:
    """(files, bytes) to upload; SubmitError naming the biggest files when over Ray's limit."""
    files = upload_files(working_dir, excludes)
    total = sum(size for _, size in files)
    if total > UPLOAD_LIMIT:
        biggest = ", ".join(f"{p} ({s / 2**20:.0f} MiB)" for p, s in sorted(files, key=lambda f: -f[1])[:5])
        raise SubmitError(f"{working_dir}: {total / 2**20:.0f} MiB to upload (Ray's limit is ~500 MiB); biggest: "
                          f"{biggest}. Exclude them with --exclude PATTERN or keep them on the cluster.")
    return len(files), total


def config_in_working_dir(config: str, working_dir: Path) -> str:
    """The config path relative to the working dir (the job sees only what is uploaded)."""
    path = Path(config).resolve()
    try:
        rel = path.relative_to(working_dir.resolve())
    except ValueError:
        raise SubmitError(f"config {config} is outside the working dir {working_dir}: move it inside, "
                          "or pass --working-dir") from None
    if _excluded(rel, False, DEFAULT_EXCLUDES) or any(_excluded(p, True, DEFAULT_EXCLUDES) for p in rel.parents):
        raise SubmitError(f"config {rel} lies in an excluded path (not uploaded): move it, e.g. to configs/")
    return rel.as_posix()


def build_entrypoint(stage: str, config_rel: str | None, overrides: list[str], python: str = "python") -> str:
    """`python -m rlhf_dist.cli STAGE --config C --k=v ...`.

    No --cluster.address: inside a Ray job the driver joins the job's cluster by itself
    (driver/actors.join_address), as it does under a plain `ray job submit`."""
    parts = [python, "-m", "rlhf_dist.cli", stage]
    if config_rel:
        parts += ["--config", config_rel]
    parts += [f"--{item}" for item in overrides]
    return shlex.join(parts)


def new_job_id(stage: str) -> str:
    """A readable, unique submission id: rlhf-ppo-20260102-030405-a1b2 (also the job's run dir name)."""
    return f"rlhf-{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def job_output_dir(output_dir: str, job_id: str) -> str:
    """<run.output_dir>/<job id>: each job its own run dir. A relative run.output_dir is refused: in a job it
    would land in Ray's temporary copy of the working dir, shared by every job and deleted with the head."""
    from rlhf_dist.storage import is_uri

    if not is_uri(output_dir) and not Path(output_dir.removeprefix("file://")).is_absolute():
        raise SubmitError(f"run.output_dir '{output_dir}' is relative: in a Ray job it would land in Ray's temporary "
                          "copy of the working dir (shared by jobs, deleted when the head restarts); give a path "
                          "every node sees (--run.output_dir /shared/runs) or a storage URI "
                          "(--run.output_dir s3://bucket/runs)")
    base, sep, query = output_dir.partition("?")  # s3://b/x?endpoint_override=...: the job id goes before '?'
    return f"{base.rstrip('/')}/{job_id}{sep}{query}"


def with_output_dir(overrides: list[str], output_dir: str) -> list[str]:
    """The CLI overrides with run.output_dir set to `output_dir` (any given one replaced)."""
    return [o for o in overrides if not o.startswith("run.output_dir=")] + [f"run.output_dir={output_dir}"]


def stream_until_done(client, job_id: str, out: TextIO = sys.stdout, poll_s: float = 2.0) -> str:
    """Print the job's logs as they come; returns its terminal status name."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as err:  # the log socket closed early: fall back to polling
        out.write(f"\n[rlhf-dist] log stream ended ({err}); waiting for the job to finish\n")
    return wait_terminal(client, job_id, poll_s)


def wait_terminal(client, job_id: str, poll_s: float = 2.0) -> str:
    """Block until the job has ended; returns its status name (SUCCEEDED, FAILED, STOPPED)."""
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(poll_s)
    return str(status.value)


def job_summary(client, job_id: str) -> str:
    info = client.get_job_info(job_id)
    took = ""
    if info.start_time and info.end_time:
        took = f" in {(info.end_time - info.start_time) / 1000:.0f}s"
    message = f": {info.message}" if info.message else ""
    return f"job {job_id} {info.status.value}{took}{message}"
