"""PPO on a real three-node Ray cluster: a head and two workers, each in its own network namespace with its own
address (tests/integration/netns.py), started with launch/start_head.sh and launch/start_worker.sh, token auth on.

The head offers no CPUs (only the driver runs there). The roles are pinned with cluster.<role>.resources to the
custom resources each worker was started with: one policy rank per worker (`policy_slot: 1` on each node), so the
policy's gloo group crosses the link; the critic on node a, the reference and the engine on node b, so the
object-store weight sync (policy rank 0 on a -> engine on b) and every batch the driver sends cross it too.

Then machines are lost mid-run (a checkpoint after every step; the reward sleeps 1 s so a step lasts long enough
to act in): node b's link cut with no capacity left, ending in exit 75 and `--resume auto` on a replacement node
that joined; then the head killed with the driver, and the job resubmitted. The run ends with the uninterrupted
run's metrics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from rlhf_dist.utils import EXIT_PREEMPTED
from tests.integration.netns import NetnsCluster

pytestmark = pytest.mark.slow

KEYS = ["reward/score_raw", "kl/seq_k1", "policy/loss", "critic/loss", "policy/entropy", "response/length"]
STEPS = 4
COMMON = ["--tracking.tensorboard", "false", "--tracking.progress", "false", "--data.demo_size", "32",
          "--cluster.reference.num_actors", "1", "--ppo.steps", str(STEPS), "--checkpoint.every_steps", "1",
          "--ppo.rewards", "[{kind: function, function: 'tests.integration.rewards:slow_lowercase'}]"]
PINS = ["--cluster.policy.resources", "{policy_slot: 1}", "--cluster.critic.resources", "{node_a: 1}",
        "--cluster.reference.resources", "{node_b: 1}", "--cluster.rollout.resources", "{node_b: 1}"]
NODE_A, NODE_B = {"node_a": 10, "policy_slot": 1}, {"node_b": 10, "policy_slot": 1}
# a lost node is noticed within Ray's health checks (seconds), a hung call within dead_actor_timeout_s (which also
# bounds a new actor's start on a loaded 2-core machine: not too tight)
FAULTS = ["--cluster.dead_actor_timeout_s", "90", "--fault_tolerance.max_restarts", "3"]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or shutil.which("ip") is None:  # CI (.ci/run) runs as root with iproute2
        pytest.fail("network namespaces need root and iproute2 (`ip`): run the suite as root")
    nodes = NetnsCluster([NODE_A, NODE_B])
    try:
        yield nodes.start()
    finally:
        nodes.close()


@pytest.fixture(scope="module")
def uninterrupted(four_step_history):
    """The same run on one node (the session's local cluster): what every multi-node run must end with."""
    return four_step_history


def _metrics(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("phase") == "ppo"]


def _assert_same(reference: list[dict], rows: list[dict]) -> None:
    steps = [r["step"] for r in rows]
    assert sorted(set(steps)) == list(range(1, STEPS + 1)), steps
    last = {r["step"]: r for r in rows}  # a step redone after a restart: its last row
    for ref in reference:
        for key in KEYS:
            assert ref[key] == pytest.approx(last[ref["step"]][key], abs=1e-5), (ref["step"], key)


def _placement(log: str) -> list[dict[str, list[str]]]:
    """Each build's role -> node address of each rank, from the driver's placement lines, in order."""
    builds: list[dict[str, list[str]]] = [{}]
    for role, ranks in re.findall(r"^(\w+): (rank 0 on .*)$", log, flags=re.MULTILINE):
        if role in builds[-1]:
            builds.append({})
        builds[-1][role] = re.findall(r"rank \d+ on ([\d.]+)", ranks)
    return builds


def _start(cluster: NetnsCluster, run, *extra: str) -> subprocess.Popen:
    return cluster.driver(["ppo", "configs/tiny.yaml", "--run.output_dir", str(run), *COMMON, *PINS, *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # the console: logs too


def _wait_checkpoint(proc: subprocess.Popen, run, step: int, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while not (run / "checkpoints" / f"step_{step:06d}").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-4000:]
        time.sleep(0.2)


def test_tiny_ppo_across_three_nodes_equals_the_one_node_run(cluster, tmp_path, uninterrupted):
    run = tmp_path / "multi"
    proc = _start(cluster, run)
    console, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, console[-4000:]
    a, b = cluster.nodes[1].ip, cluster.nodes[2].ip
    placed = _placement(console)  # which policy rank lands on which worker is Ray's choice: one on each
    assert [{role: sorted(ips) for role, ips in build.items()} for build in placed] == [
        {"policy": sorted([a, b]), "reference": [b], "rollout": [b], "critic": [a]}], console[-3000:]
    _assert_same(uninterrupted, _metrics(run))
    assert (run / "policy" / "config.json").is_file()


def test_a_cut_node_then_the_head_lost_each_end_resumable_and_the_run_ends_identical(cluster, tmp_path,
                                                                                     uninterrupted):
    """One run, two machines lost in turn (each case costs a run start, so they share one):
    node b cut off with no spare capacity -> exit 75 -> a replacement joins -> `--resume auto` goes on; then the head
    dies with the driver -> the cluster comes back -> the resubmitted job resumes and ends identical."""
    run = tmp_path / "lost"
    proc = _start(cluster, run, *FAULTS, "--fault_tolerance.node_wait_s", "15")
    _wait_checkpoint(proc, run, 2)
    cluster.cut(2)  # node b unreachable: policy rank 1, reference, engine
    try:
        console, _ = proc.communicate(timeout=600)
    finally:
        cluster.restore(2)
    assert proc.returncode == EXIT_PREEMPTED, console[-4000:]
    assert "could not place" in console and "--resume auto" in console and "Traceback" not in console, console[-3000:]
    _assert_checkpoints_whole(run, "step_000002")
    # Ray declared node b dead (and never takes it back): the machine is retired, a replacement takes its place
    cluster.retire(2)
    cluster.add_worker(NODE_B)

    resumed = _start(cluster, run, *FAULTS, "--resume", "auto")
    _wait_checkpoint(resumed, run, 3)
    cluster.kill_node(0)  # the head machine: GCS, raylet, dashboard, and the driver that runs there
    console, _ = resumed.communicate(timeout=120)
    assert resumed.returncode != 0 and f"resumed from {run / 'checkpoints'}" in console, console[-4000:]
    _assert_checkpoints_whole(run, "step_000003")
    cluster.stop()  # the workers lost their head too: the machines come back and Ray starts again
    cluster.start_nodes()

    again = _start(cluster, run, "--resume", "auto")
    console, _ = again.communicate(timeout=600)
    assert again.returncode == 0, console[-4000:]
    assert f"resumed from {run / 'checkpoints'}" in console
    _assert_same(uninterrupted, _metrics(run))


def _assert_checkpoints_whole(run, newest: str) -> None:
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert newest in saved and not any(name.endswith(".tmp") for name in saved), saved
