"""launch/slurm/rlhf_dist.sbatch on a real, private one-node Slurm cluster (Debian's slurm-wlm, 22.05).

slurmctld and slurmd run from a slurm.conf in a temp dir (own ports, state, logs); munged is the
system one (started here as STACK.md says when it is not running). The tiny preset runs to
COMPLETED with the exported policy in the output dir and a clean teardown; a second job gets the
preemption signal, checkpoints, exits 75, requeues itself and its second run resumes to COMPLETED.
Only the daemons and Ray processes started here are stopped (by pid / by this test's temp dir).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rlhf_dist.utils import free_ports

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "launch" / "slurm" / "rlhf_dist.sbatch"
TINY = ["--data.demo_size", "32", "--tracking.progress", "false", "--tracking.tensorboard", "false",
        "--cluster.reference.num_actors", "1"]


def _munge_works() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True,
                                                       timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_munged() -> int | None:
    """The system munged, as STACK.md starts it; returns its pid when this test started it."""
    if _munge_works():
        return None
    if os.geteuid() != 0:  # a missing prerequisite fails loudly: CI (.ci/run, as root) always has it
        pytest.fail("munged is not running and starting it needs root: run as root, or start munged "
                    "(see ../shared/STACK.md)")
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["su", "munge", "-s", "/bin/sh", "-c", "/usr/sbin/munged"], check=True, timeout=30)
    for _ in range(50):
        if _munge_works():
            return int(Path("/run/munge/munged.pid").read_text())
        time.sleep(0.2)
    raise RuntimeError("munged did not start")


SLURM_CONF = """ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=30
NodeName=localhost CPUs=2 RealMemory=20000
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm():
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        pytest.fail("slurmctld not installed: apt-get install -y slurm-wlm munge (.ci/run installs them)")
    d = Path(tempfile.mkdtemp(prefix="/tmp/sl"))  # short: Ray's socket paths under it must stay < 107 chars
    (d / "state").mkdir()
    (d / "spool").mkdir()
    ctld, slurmd = free_ports(2)
    (d / "slurm.conf").write_text(SLURM_CONF.format(ctld=ctld, slurmd=slurmd, d=d))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    env["SLURM_CONF"] = str(d / "slurm.conf")
    munged = _start_munged()
    try:
        subprocess.run(["slurmctld", "-f", str(d / "slurm.conf")], env=env, check=True, timeout=60)
        subprocess.run(["slurmd", "-f", str(d / "slurm.conf"), "-N", "localhost"], env=env, check=True, timeout=60)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True,
                                           text=True).stdout:
            assert time.monotonic() < deadline, (d / "slurmctld.log").read_text()[-3000:]
            time.sleep(0.5)
        yield {"dir": d, "env": env}
    finally:
        for name in ("slurmd", "slurmctld"):
            pid_file = d / f"{name}.pid"
            if pid_file.is_file():
                _stop_pid(int(pid_file.read_text()))
        _stop_ray_under(str(d))
        if munged is not None:
            _stop_pid(munged)
        shutil.rmtree(d, ignore_errors=True)


def _stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def _ray_under(path: str) -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if any(path in a for a in (p.info["cmdline"] or []))
            and p.pid != os.getpid()]


def _stop_ray_under(path: str) -> None:
    for proc in _ray_under(path):
        try:
            proc.kill()
        except Exception:  # already gone
            pass


def _sbatch(slurm, name: str, args: list[str]) -> tuple[str, Path, Path]:
    d = slurm["dir"]
    out_dir, log = d / f"{name}-out", d / f"{name}.log"
    gcs, dash, client, nm, om, rt, agrpc, alisten, metrics = free_ports(9)
    env = {**slurm["env"], "RLHF_DIST_JOB_DIR": str(d / "jobs"), "RAY_PORT": str(gcs), "DASHBOARD_PORT": str(dash),
           "RAY_HEAD_IP": "127.0.0.1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_START_ARGS": f"--temp-dir {d}/ray --ray-client-server-port {client} --node-manager-port {nm} "
                             f"--object-manager-port {om} --runtime-env-agent-port {rt} --dashboard-agent-grpc-port "
                             f"{agrpc} --dashboard-agent-listen-port {alisten} --metrics-export-port {metrics}"}
    cmd = ["sbatch", "--parsable", "--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2", f"--output={log}",
           f"--job-name={name}", str(SBATCH), "configs/tiny.yaml", "--run.output_dir", str(out_dir), *TINY, *args]
    sub = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    return sub.stdout.strip().split(";")[0], out_dir, log


def _job(slurm, job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], env=slurm["env"], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def _wait_done(slurm, job_id: str, log: Path, timeout: float = 900) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (job := _job(slurm, job_id)).get("JobState") not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                                 "NODE_FAIL", "OUT_OF_MEMORY"):
        assert time.monotonic() < deadline, (job, log.read_text()[-3000:] if log.exists() else "no log")
        time.sleep(1)
    return job


def _ppo_steps(out_dir: Path) -> list[int]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if r.get("phase") == "ppo"]


def test_preempted_job_checkpoints_requeues_resumes_and_completes_cleanly(slurm):
    """One job through the whole life of a preemptible run (one job, not two: each costs a minute of CI):
    it starts, is signalled, checkpoints, is requeued, resumes, finishes COMPLETED with the exported
    policy in its output dir, and tears its Ray steps down cleanly."""
    started = time.monotonic()
    # A tiny step takes ~0.2 s: 30 steps leave the signal (sent after step 1) seconds to arrive mid-run; with
    # 4 the run could finish first and never be preempted (seen in CI).
    steps = 30
    job_id, out_dir, log = _sbatch(slurm, "preempt", ["--ppo.steps", str(steps), "--checkpoint.every_steps", "0"])
    deadline = time.monotonic() + 600
    while not _ppo_steps(out_dir):  # training has started: the driver's SIGTERM handler is in place
        assert time.monotonic() < deadline and _job(slurm, job_id)["JobState"] in ("PENDING", "RUNNING"), \
            log.read_text()[-3000:] if log.exists() else "no log"
        time.sleep(0.5)
    # what Slurm does before a preemption or the time limit with --signal=B:TERM: SIGTERM to the batch shell
    subprocess.run(["scancel", "--batch", "--signal=TERM", job_id], env=slurm["env"], check=True, timeout=30)
    while (job := _job(slurm, job_id)).get("Restarts") == "0" and job.get("JobState") == "RUNNING":
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    if job.get("JobState") == "PENDING":  # Slurm holds a requeued job ~2 min (BeginTime); an admin may skip that
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=slurm["env"], timeout=30)
    job = _wait_done(slurm, job_id, log)
    text = log.read_text()
    ctld = (slurm["dir"] / "slurmctld.log").read_text()[-3000:]
    print(f"--- job log {log}:\n{text}\n--- slurmctld.log (end):\n{ctld}")  # shown in full on a failure
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", (job, text[-4000:], ctld)
    assert "SIGTERM: asking the driver to checkpoint" in text and "finished with exit code 75" in text
    assert f"requeueing job {job_id}" in text and "finished with exit code 0" in text
    assert _ppo_steps(out_dir) == list(range(1, steps + 1))  # the requeued run resumed: no step trained twice
    assert (out_dir / "policy" / "config.json").is_file()
    # the Ray steps ended by themselves, cleanly: no "Killed", no srun error, no Ray process left
    assert "Killed" not in text and "srun: error" not in text and "ended with an error" not in text, text[-3000:]
    assert not _ray_under(str(slurm["dir"] / "ray"))
    assert not (slurm["dir"] / "jobs" / job_id).exists()  # the job's token is gone with it
    print(f"preempted job {job_id}: COMPLETED after one requeue in {time.monotonic() - started:.0f}s")
