#!/usr/bin/env python3
"""Build docker/Dockerfile.cpu for real, run the tiny job in it with no network, check what it wrote.

    make docker-check                 # build + run `pipeline -c configs/tiny.yaml` + check (DOCKER_CHECK_ARGS=...)
    make docker-cpu                   # build only
    python3 docker/check_cpu.py --help

Standard library only (the host needs docker and python3, not the project's .venv). Steps: start dockerd when
no daemon answers (root only); pick the base image: the Dockerfile's default when it is here or can be pulled,
else a stand-in built from Debian's packages (debootstrap, root only; cached by tag); `docker build` with the
classic builder; `docker run --network none` with the output dir mounted; check the run dir; print a table and
write <out>/docker_check.json. Build and run hold /tmp/rlhf-heavy.lock (the machine is shared; the times
count from when the lock is held). The stand-in carries this machine's CA bundle and pip settings (for a
network that re-signs TLS): images built on it are for this machine only, never to be pushed; the
Dockerfile itself never sees them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import standin  # noqa: E402  (docker/standin.py: the stand-in base and the wheel server)
from standin import CheckError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile.cpu"
IMAGE_UID = 1000  # the Dockerfile's `rlhf` user: the mounted output dir must be writable for it
JOB_DIR = "job"  # the run dir inside the output dir (the container sees it as /app/runs/job)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line naming the option, no usage dump
        print(f"check_cpu.py: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog="check_cpu.py", description=__doc__.split("\n")[0])
    p.add_argument("--tag", default="rlhf-dist:cpu", help="image tag to build / run (default: %(default)s)")
    p.add_argument("--base", help="base image to build on (skips the registry probe and the stand-in)")
    p.add_argument("--standin", action="store_true", help="build on the Debian stand-in even if a registry answers")
    p.add_argument("--rebuild-base", action="store_true", help="rebuild the stand-in even if its tag exists")
    p.add_argument("--command", default="pipeline", choices=["pipeline", "ppo"], help="rlhf-dist command to run")
    p.add_argument("-c", "--config", default="configs/tiny.yaml", help="config, relative to the repo root")
    p.add_argument("--out", default="runs/docker-check",
                   help="host output dir, mounted at /app/runs (keep it under runs/: .dockerignore leaves it out)")
    p.add_argument("--build-only", action="store_true", help="build the image, run nothing")
    p.add_argument("--no-build", action="store_true", help="run the existing --tag image, build nothing")
    p.add_argument("--mirror", default=standin.apt_mirror(), help="Debian mirror for debootstrap (%(default)s)")
    p.add_argument("--ca-bundle", default=standin.host_ca_bundle(),
                   help="CA bundle the stand-in's pip trusts (default: this machine's pip cert: %(default)s)")
    p.add_argument("--wheels", default=standin.host_find_links(),
                   help="dir of wheels served to the stand-in build on 127.0.0.1 (default: pip's find-links: "
                        "%(default)s)")
    p.add_argument("--wheels-port", type=int, default=38417, help="port for --wheels (default: %(default)s)")
    p.add_argument("--lock", default="/tmp/rlhf-heavy.lock", help="lock file held while building / running")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed for the build, and for the run")
    args = p.parse_args(argv)
    if args.build_only and args.no_build:
        p.error("--build-only and --no-build exclude each other")
    if args.base and args.standin:
        p.error(f"--base {args.base} and --standin exclude each other")
    config = ROOT / args.config
    if not config.is_file() or not config.resolve().is_relative_to(ROOT):
        p.error(f"--config {args.config}: no such file inside the repo (the image holds the repo's files only)")
    if not 1024 <= args.wheels_port <= 65535:
        p.error(f"--wheels-port {args.wheels_port}: not a port in 1024-65535")
    if args.wheels and not Path(args.wheels).is_dir():
        p.error(f"--wheels {args.wheels}: not a directory")
    if args.ca_bundle and not Path(args.ca_bundle).is_file():
        p.error(f"--ca-bundle {args.ca_bundle}: no such file")
    if args.timeout <= 0:
        p.error(f"--timeout {args.timeout}: must be > 0")
    return args


def default_base(dockerfile: Path = DOCKERFILE) -> str:
    """The base a user's `docker build` uses: the Dockerfile's `ARG BASE_IMAGE=` default."""
    m = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile.read_text(), re.M)
    if not m:
        raise CheckError(f"{dockerfile}: no `ARG BASE_IMAGE=<image>` line")
    return m.group(1)


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """A short docker command; with check, its failure is a CheckError quoting docker's own message."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise CheckError(f"docker {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def ensure_daemon() -> None:
    """`docker info` answers, or (as root) start dockerd and wait for it."""
    if docker("info", check=False).returncode == 0:
        return
    if os.geteuid() != 0:
        raise CheckError("no Docker daemon answers (docker info failed); start it (sudo dockerd / systemctl start "
                         "docker) or run this as root")
    log = Path("/var/log/rlhf-dist-dockerd.log")
    print(f"docker-check: starting dockerd (log: {log})")
    with open(log, "ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    for _ in range(60):
        time.sleep(1)
        if docker("info", check=False).returncode == 0:
            return
    raise CheckError(f"dockerd did not answer within 60 s: see {log}")


@contextlib.contextmanager
def heavy(lock: str) -> Iterator[float]:
    """Hold the machine's heavy-run lock (the same lock as `flock /tmp/rlhf-heavy.lock CMD`); yields the wait."""
    started = time.monotonic()
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"docker-check: waiting for {lock} (another heavy run holds it)")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield time.monotonic() - started


def pick_base(args: argparse.Namespace) -> tuple[str, dict]:
    """The image to build on, and what the JSON records about it."""
    if args.base:
        return args.base, {"image": args.base, "standin": False}
    base = default_base()
    if not args.standin:
        if docker("image", "inspect", base, check=False).returncode == 0:
            return base, {"image": base, "standin": False}
        pulled = docker("pull", base, check=False, timeout=900)
        if pulled.returncode == 0:
            return base, {"image": base, "standin": False}
        why = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"docker-check: no registry reachable (docker pull {base}: {why}); building on a stand-in base "
              "from Debian's packages instead")
    if os.geteuid() != 0:
        raise CheckError(f"{base} cannot be pulled and the stand-in base needs root (debootstrap): run as root "
                         "or pass --base IMAGE")
    port = args.wheels_port if args.wheels else None  # no wheels to serve: no find-links in the stand-in
    tag, seconds = standin.ensure(base, args.mirror, args.ca_bundle, port, rebuild=args.rebuild_base)
    return tag, {"image": tag, "standin": True, "replaces": base, "standin_build_s": seconds,
                 "standin_bytes": image_bytes(tag)}


def image_bytes(tag: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())


def stream(cmd: list[str], log: Path, timeout: int, echo: re.Pattern | None = None,
           env: dict | None = None) -> int:
    """Run cmd, every line to log; the lines matching echo (all when None) to the console too."""
    with open(log, "w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                  text=True, bufsize=1, env=env) as proc:
        timer = threading.Timer(timeout, proc.kill)  # a silent hang ends too
        timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
                if echo is None or echo.match(line):
                    print(f"  {line.rstrip()}", flush=True)
            rc = proc.wait()
        finally:
            timer.cancel()
    if rc < 0:
        raise CheckError(f"{' '.join(cmd[:2])} ran past --timeout {timeout} s (killed): see {log}")
    return rc


def build(args: argparse.Namespace, base: str, info: dict, out: Path) -> dict:
    """`docker build` with the classic builder, host network; timed once the heavy lock is held."""
    cmd = ["docker", "build", "--network", "host", "-f", str(DOCKERFILE.relative_to(ROOT)), "-t", args.tag]
    if info["standin"] or args.base:
        cmd += ["--build-arg", f"BASE_IMAGE={base}"]
    cmd.append(".")
    log = out / "build.log"
    port = standin.wheels_port(base)  # a stand-in's pip looks for wheels there (None for any other base)
    # the classic builder: BuildKit needs the buildx plugin and an entitlement for --network host
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    print(f"docker-check: DOCKER_BUILDKIT=0 {' '.join(cmd)}  (log: {log})")
    with standin.serve_wheels(args.wheels, port), heavy(args.lock) as waited:
        started = time.monotonic()
        rc = stream(cmd, log, args.timeout, re.compile(r"^(Step \d+/\d+|Successfully)"), env)
        seconds = round(time.monotonic() - started, 1)
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise CheckError(f"docker build failed (exit {rc}) after {seconds} s; last lines of {log}:\n{tail}")
    text = log.read_text()
    steps, cached = len(re.findall(r"^Step \d+/", text, re.M)), text.count("---> Using cache")
    return {"build_s": seconds, "build_lock_wait_s": round(waited, 1), "build_steps_cached": f"{cached}/{steps}",
            "image_bytes": image_bytes(args.tag)}


def writable_for_image(out: Path) -> None:
    """The container runs as uid 1000: the mounted dir must be writable for it; its files stay world-readable."""
    out.mkdir(parents=True, exist_ok=True)
    if out.stat().st_uid == IMAGE_UID:
        return
    if os.geteuid() == 0:
        os.chown(out, IMAGE_UID, IMAGE_UID)
    else:
        out.chmod(0o777)


def run_job(args: argparse.Namespace, out: Path) -> dict:
    """The job inside the image, no network, the run dir on the mounted volume."""
    job = out / JOB_DIR
    if job.exists():  # an earlier check's run dir (its JSON is there): replaced; anything else is kept
        if not (out / "docker_check.json").is_file():
            raise CheckError(f"{job} exists and is no earlier check's: remove it or pass another --out")
        shutil.rmtree(job, ignore_errors=True)
        if job.exists():
            raise CheckError(f"cannot remove the earlier check's {job} (owned by uid {IMAGE_UID}): remove it "
                             "as root or pass another --out")
    writable_for_image(out)
    name = f"rlhf-dist-check-{os.getpid()}"
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "none", "--shm-size=4g",
           "-v", f"{out.resolve()}:/app/runs", args.tag, args.command, "-c", args.config,
           f"--run.output_dir=runs/{JOB_DIR}"]
    log = out / "run.log"
    print(f"docker-check: {' '.join(cmd)}  (log: {log})")
    with heavy(args.lock) as waited:
        started = time.monotonic()
        try:
            rc = stream(cmd, log, args.timeout)
        finally:  # a timeout or ^C kills the client only: the container goes too
            docker("rm", "-f", name, check=False)
        seconds = round(time.monotonic() - started, 1)
    result = {"run_s": seconds, "run_lock_wait_s": round(waited, 1), "run_exit": rc,
              "run_command": " ".join(cmd)}
    result["checks"] = check_outputs(job, args.command)
    return result


def check_outputs(job: Path, command: str) -> dict:
    """What a finished run leaves: the exported policy (HF config.json), the PPO metrics, the summary."""
    checks: dict[str, object] = {}

    def read_json(rel: str) -> object:
        path = job / rel
        ok = path.is_file() and os.access(path, os.R_OK)
        checks[rel] = "ok" if ok else "missing or unreadable"
        return json.loads(path.read_text()) if ok else None

    policy = read_json("policy/config.json")
    if policy is not None and "model_type" not in policy:
        checks["policy/config.json"] = "no model_type: not an HF model config"
    ppo = read_json("ppo_metrics.json")
    if ppo is not None:
        steps = [m.get("step") for m in ppo.get("history", [])]
        checks["ppo_steps"] = len(steps)
        if not steps or steps != list(range(1, len(steps) + 1)):
            checks["ppo_metrics.json"] = f"steps {steps}: expected 1..N"
    lines = (job / "metrics.jsonl").read_text().splitlines() if (job / "metrics.jsonl").is_file() else []
    checks["metrics.jsonl"] = "ok" if lines and all(json.loads(x) for x in lines) else "missing or empty"
    if command == "pipeline":
        summary = read_json("summary.json")
        if summary is not None:
            missing = [k for k in ("rm_accuracy", "win_rate", "kl") if summary.get(k) is None]
            checks["summary.json"] = f"missing {missing}" if missing else "ok"
            checks["figures"] = {k: summary.get(k) for k in ("rm_accuracy", "win_rate", "kl", "wall_seconds")}
    return checks


def verdict(result: dict) -> str:
    if "error" in result:
        return "FAIL: " + result["error"].splitlines()[0]
    if result.get("run_exit") not in (None, 0):
        return f"FAIL: the job exited {result['run_exit']}"
    bad = [f"{k}: {v}" for k, v in result.get("checks", {}).items() if isinstance(v, str) and v != "ok"]
    return "FAIL: " + "; ".join(bad) if bad else "PASS"


def machine() -> dict:
    """Where and under what load it ran (the 2-core machine is shared: the times depend on it)."""
    versions = docker("version", "-f", "{{.Client.Version}} {{.Server.Version}}", check=False).stdout.split()
    return {"host": platform.node(), "cpus": os.cpu_count(), "load_avg": list(os.getloadavg()),
            "docker_client": versions[0] if versions else None,
            "docker_server": versions[1] if len(versions) > 1 else None}


def table(result: dict) -> str:
    base = result.get("base", {})
    rows = [("base image", base["image"] + (f" (stand-in for {base['replaces']})" if base["standin"] else ""))
            ] if base else []
    if base.get("standin"):
        rows.append(("stand-in build s", str(base.get("standin_build_s") or "cached (built before)")))
    rows += [("image", result["tag"]), ("build s", f"{result['build_s']} ({result['build_steps_cached']} steps cached)"
                                                   if "build_s" in result else "-"),
             ("image size", f"{result['image_bytes'] / 1e9:.2f} GB" if "image_bytes" in result else "-"),
             ("run s", str(result.get("run_s", "-"))), ("result", result["result"])]
    figures = result.get("checks", {}).get("figures")
    if figures:
        rows.insert(-1, ("job figures", ", ".join(f"{k} {v}" for k, v in figures.items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines in order when piped (make, CI logs)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tag": args.tag, "command": args.command,
                    "config": args.config, "dockerfile": str(DOCKERFILE.relative_to(ROOT))}
    try:
        ensure_daemon()
        result["machine"] = machine()
        if not args.no_build:
            base, result["base"] = pick_base(args)
            result.update(build(args, base, result["base"], out))
        if not args.build_only:
            result.update(run_job(args, out))
        result.setdefault("image_bytes", image_bytes(args.tag))  # --no-build: the image that ran
    except (CheckError, subprocess.TimeoutExpired) as exc:
        result["error"] = str(exc).strip()
    result["result"] = verdict(result)
    result.setdefault("machine", {})["load_avg_after"] = list(os.getloadavg())
    (out / "docker_check.json").write_text(json.dumps(result, indent=2) + "\n")
    if "error" in result:
        print(f"docker-check: {result['error']}", file=sys.stderr)
    print(table(result))
    print(f"docker-check: wrote {out / 'docker_check.json'}")
    return 0 if result["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
