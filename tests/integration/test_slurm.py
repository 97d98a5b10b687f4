"""launch/slurm/rlhf_dist.sbatch on a real, private two-node Slurm cluster (Debian's slurm-wlm, 22.05).

Each node is a network namespace with its own address (tests/integration/netns.py: a hub namespace with the
bridge, node i at 10.213.S.(i+1)); slurmctld runs in the hub, one `slurmd -N n<i>` in each node's namespace with
NodeAddr = that address, so the batch script runs on n1 and each `srun` step on its own node's address. munged is
the system one (started here as STACK.md says when it is not running): its Unix socket serves every namespace.
The daemons and the Slurm commands enter a namespace with `nsenter --net` rather than `ip netns exec`, which
remounts /sys for the namespace without /sys/fs/cgroup (slurmd refuses to start without it).

One job goes through the whole life of a preemptible two-node run: `sbatch --nodes=2` starts the Ray head on
n1 and a worker on n2, the driver places the policy's two ranks one per node, is signalled mid-run, checkpoints,
exits 75, the job requeues itself and its second run resumes to COMPLETED. Only the daemons and Ray processes
started here are stopped (by pid / by this test's temp dir); the namespaces are removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.netns import NetnsCluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "launch" / "slurm" / "rlhf_dist.sbatch"
# Each node offers 2 CPUs (--cpus-per-task=2); a policy rank asking for 1.5 leaves no room for a second one on
# its node, so the two ranks (and their gloo group) land one on each node; the other roles take 0.25 each.
TINY = ["--data.demo_size", "32", "--tracking.progress", "false", "--tracking.tensorboard", "false",
        "--cluster.reference.num_actors", "1", "--cluster.policy.cpus_per_actor", "1.5"]


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
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["su", "munge", "-s", "/bin/sh", "-c", "/usr/sbin/munged"], check=True, timeout=30)
    for _ in range(50):
        if _munge_works():
            return int(Path("/run/munge/munged.pid").read_text())
        time.sleep(0.2)
    raise RuntimeError("munged did not start")


SLURM_CONF = """ClusterName=local
SlurmctldHost={host}({hub_ip})
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
KillWait=30
NodeName=n1 NodeAddr={n1} CPUs=2 RealMemory=10000
NodeName=n2 NodeAddr={n2} CPUs=2 RealMemory=10000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""


def _in(netns: str, cmd: list[str]) -> list[str]:
    """cmd in a namespace's network only (same mounts: /sys/fs/cgroup, the munge socket, the temp dirs)."""
    return ["nsenter", f"--net=/run/netns/{netns}", *cmd]


@pytest.fixture(scope="module")
def slurm():
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        pytest.fail("slurmctld not installed: apt-get install -y slurm-wlm munge (.ci/run installs them)")
    if os.geteuid() != 0 or shutil.which("ip") is None:  # CI (.ci/run) runs as root with iproute2
        pytest.fail("network namespaces and munged need root and iproute2 (`ip`): run the suite as root")
    net = NetnsCluster([{}, {}])  # its network only: Ray is started by the batch script
    d = net.base  # short: Ray's socket paths under it must stay < 107 chars
    for name in ("state", "spool/n1", "spool/n2"):
        (d / name).mkdir(parents=True)
    hub, n1, n2 = net.nodes
    conf = SLURM_CONF.format(host=os.uname().nodename.split(".")[0], hub_ip=hub.ip, n1=n1.ip, n2=n2.ip, d=d)
    (d / "slurm.conf").write_text(conf)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    env["SLURM_CONF"] = str(d / "slurm.conf")
    munged = _start_munged()
    try:
        net.create_network()
        _multi_homed(n1.netns, f"10.214.{net.subnet.split('.')[2]}.2", n1.ip)
        subprocess.run(_in(hub.netns, ["slurmctld", "-f", str(d / "slurm.conf")]), env=env, check=True, timeout=60)
        for node in ("n1", "n2"):
            subprocess.run(_in(net.nodes[int(node[1])].netns, ["slurmd", "-f", str(d / "slurm.conf"), "-N", node]),
                           env=env, check=True, timeout=60)
        state = {"dir": d, "env": env, "hub": hub.netns, "ips": {"n1": n1.ip, "n2": n2.ip}}
        deadline = time.monotonic() + 60
        while _run(state, ["sinfo", "-h", "-o", "%t %D"]).stdout.split() != ["idle", "2"]:
            assert time.monotonic() < deadline, (d / "slurmctld.log").read_text()[-3000:]
            time.sleep(0.5)
        yield state
    finally:
        for name in ("slurmd-n2", "slurmd-n1", "slurmctld"):
            pid_file = d / f"{name}.pid"
            if pid_file.is_file():
                _stop_pid(int(pid_file.read_text()))
        _stop_ray_under(str(d))
        if munged is not None:
            _stop_pid(munged)
        net.remove_network()
        shutil.rmtree(d, ignore_errors=True)


def _multi_homed(netns: str, first: str, cluster_ip: str) -> None:
    """The node's first address on a network the other nodes do not share (a management or public interface,
    as on many clusters): the head must serve on the address Slurm reaches the node at (its NodeAddr), not on
    the node's first address (`hostname -I`)."""
    for args in (["-4", "addr", "flush", "dev", "eth0"], ["addr", "add", f"{first}/24", "dev", "eth0"],
                 ["addr", "add", f"{cluster_ip}/24", "dev", "eth0"]):
        subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True, timeout=30)
    listed = subprocess.run(_in(netns, ["hostname", "-I"]), capture_output=True, text=True, timeout=30).stdout
    assert listed.split()[:2] == [first, cluster_ip], listed


def _run(slurm, cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """A Slurm command from the hub namespace (where slurmctld listens)."""
    return subprocess.run(_in(slurm["hub"], cmd), env=kwargs.pop("env", slurm["env"]), capture_output=True,
                          text=True, timeout=60, **kwargs)


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
    # Ray's default ports: each node's namespace is its own. No RAY_HEAD_IP: the script finds n1's address.
    env = {**slurm["env"], "RLHF_DIST_JOB_DIR": str(d / "jobs"), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_START_ARGS": f"--temp-dir {d}/ray"}
    cmd = ["sbatch", "--parsable", "--nodes=2", "--gpus-per-node=0", "--cpus-per-task=2", f"--output={log}",
           f"--job-name={name}", str(SBATCH), "configs/tiny.yaml", "--run.output_dir", str(out_dir), *TINY, *args]
    sub = _run(slurm, cmd, cwd=REPO, env=env)
    assert sub.returncode == 0, sub.stderr
    return sub.stdout.strip().split(";")[0], out_dir, log


def _job(slurm, job_id: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", _run(slurm, ["scontrol", "show", "job", job_id]).stdout))


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


def _placements(log: str) -> list[dict[str, list[str]]]:
    """Each run's role -> node address of each rank, from the driver's lines 'policy: rank 0 on IP (pid P); ...'."""
    runs: list[dict[str, list[str]]] = [{}]
    for role, ranks in re.findall(r"^(\w+): (rank 0 on .*)$", log, flags=re.MULTILINE):
        if role in runs[-1]:
            runs.append({})
        runs[-1][role] = re.findall(r"rank \d+ on ([\d.]+)", ranks)
    return runs


def test_two_node_job_preempted_checkpoints_requeues_resumes_and_completes_cleanly(slurm):
    """One job through the whole life of a preemptible two-node run (one job, not two: each costs a minute of
    CI): both nodes join its Ray cluster, the policy's ranks run one on each, it is signalled, checkpoints, is
    requeued, resumes (again on both nodes), finishes COMPLETED with the exported policy in its output dir,
    and tears its Ray steps down cleanly on both nodes."""
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
    assert _run(slurm, ["scancel", "--batch", "--signal=TERM", job_id]).returncode == 0
    while (job := _job(slurm, job_id)).get("Restarts") == "0" and job.get("JobState") == "RUNNING":
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    if job.get("JobState") == "PENDING":  # Slurm holds a requeued job ~2 min (BeginTime); an admin may skip that
        # but not within the second of the requeue: slurmd refuses a launch credential no newer (in whole
        # seconds) than the old run's revoked one, and the job ends FAILED (seen here with the one-node test)
        time.sleep(1.5)
        _run(slurm, ["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    job = _wait_done(slurm, job_id, log)
    text = log.read_text()
    ctld = "".join(f"--- {name} (end):\n{(slurm['dir'] / name).read_text()[-2000:]}\n"
                   for name in ("slurmctld.log", "slurmd-n1.log", "slurmd-n2.log"))
    print(f"--- job log {log}:\n{text}\n{ctld}")  # shown in full on a failure
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", (job, text[-4000:], ctld)
    assert job["NodeList"] == "n[1-2]" and job["BatchHost"] == "n1", job
    assert "SIGTERM: asking the driver to checkpoint" in text and "finished with exit code 75" in text
    assert f"requeueing job {job_id}" in text and "finished with exit code 0" in text
    assert text.count("ray cluster: 2 nodes up") == 2, text[-3000:]
    # both runs: the head on n1's address, the policy's ranks on n1 and n2, every actor on one of the two
    n1, n2 = slurm["ips"]["n1"], slurm["ips"]["n2"]
    runs = _placements(text)
    assert len(runs) == 2 and all(sorted(run["policy"]) == [n1, n2] for run in runs), runs
    assert all(set(run) >= {"policy", "critic", "reference", "rollout"} for run in runs), runs
    assert {ip for run in runs for ips in run.values() for ip in ips} == {n1, n2}, runs
    assert _ppo_steps(out_dir) == list(range(1, steps + 1))  # the requeued run resumed: no step trained twice
    assert (out_dir / "policy" / "config.json").is_file()
    # the Ray steps ended by themselves, cleanly: no "Killed", no srun error, no Ray process left on either node
    assert "Killed" not in text and "srun: error" not in text and "ended with an error" not in text, text[-3000:]
    assert not _ray_under(str(slurm["dir"] / "ray"))
    assert not (slurm["dir"] / "jobs" / job_id).exists()  # the job's token is gone with it
    print(f"two-node preempted job {job_id}: COMPLETED after one requeue in {time.monotonic() - started:.0f}s; "
          f"placements {runs}")
