"""Several Ray nodes on one machine, each in its own network namespace with its own address (root only).

    hub namespace  <hub>: bridge br0 10.213.S.1/24, the Ray head (launch/start_head.sh) and the driver
    node i         <hub>n<i>: veth 10.213.S.(i+1)/24 whose peer is a port of br0 (launch/start_worker.sh)

Every address lives inside a namespace created here and removed at the end, and the bridge is inside the hub
namespace, so nothing is routed to or from any other address (../shared/STACK.md, "Several hosts on one
machine"). A node is lost by killing its processes (`kill_node`) or by cutting its link (`cut` / `restore`:
its bridge port down or up). Only processes started here are stopped, by PID: those whose command line names
the node's temp dir and those holding files under it (never `ray stop`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# The head's GCS declares a silent node dead after `failure_threshold` missed checks, one per `period_ms`, each
# waiting `timeout_ms` (Ray's defaults: 3 s, 10 s, 5: about a minute). A lost node is what these tests are about:
# notice it within ~10 s (still 5 misses in a row, so a busy 2-core machine is not mistaken for a lost node).
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                 "RAY_health_check_failure_threshold": "5"}


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Node:
    index: int  # 0 = the head
    netns: str
    ip: str
    port: str  # the hub-side veth (bridge port); "" for the head
    temp_dir: str
    resources: dict[str, float] = field(default_factory=dict)
    retired: bool = False  # a lost machine that stays gone (its namespace removed)


class NetnsCluster:
    """A Ray head and `workers` worker nodes, each in its own namespace; token auth on."""

    def __init__(self, workers: list[dict[str, float]], cpus_per_worker: int = 1) -> None:
        tag = secrets.token_hex(2)
        self.hub = f"rdn{tag}"
        self.subnet = f"10.213.{secrets.randbelow(250) + 2}"
        self.base = Path(tempfile.mkdtemp(prefix="/tmp/rn"))  # short: Ray's socket paths stay < 107 chars
        self.token = self.base / "token"
        self.port, self.dashboard = 6379, 8265  # inside the hub namespace: nothing else listens there
        self.cpus_per_worker = cpus_per_worker
        self.nodes = [Node(0, self.hub, f"{self.subnet}.1", "", str(self.base / "n0"))]
        for i, resources in enumerate(workers, start=1):
            self.nodes.append(Node(i, f"{self.hub}n{i}", f"{self.subnet}.{i + 1}", f"rdp{tag}{i}",
                                   str(self.base / f"n{i}"), resources))
        self.pids: set[int] = set()

    # ---- network ----
    def create_network(self) -> None:
        _ip("netns", "add", self.hub)
        _ip("link", "set", "lo", "up", netns=self.hub)
        _ip("link", "add", "br0", "type", "bridge", netns=self.hub)
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", "br0", netns=self.hub)
        _ip("link", "set", "br0", "up", netns=self.hub)
        for node in self.nodes[1:]:
            self._connect(node)

    def _connect(self, node: Node) -> None:
        """The node's namespace, and a veth from it to a new port of the hub's bridge."""
        _ip("netns", "add", node.netns)
        _ip("link", "set", "lo", "up", netns=node.netns)
        _ip("link", "add", node.port, "netns", self.hub, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
        _ip("link", "set", node.port, "master", "br0", netns=self.hub)
        _ip("link", "set", node.port, "up", netns=self.hub)
        _ip("addr", "add", f"{node.ip}/24", "dev", "eth0", netns=node.netns)
        _ip("link", "set", "eth0", "up", netns=node.netns)

    def add_worker(self, resources: dict[str, float]) -> Node:
        """A new machine joins: its own namespace and address, launch/start_worker.sh, until Ray counts it."""
        i = len(self.nodes)
        node = Node(i, f"{self.hub}n{i}", f"{self.subnet}.{i + 1}", f"{self.nodes[1].port[:-1]}{i}",
                    str(self.base / f"n{i}"), resources)
        self.nodes.append(node)
        self._connect(node)
        self.start_worker(i)
        self.wait_nodes(sum(not n.retired for n in self.nodes))  # a retired machine is (or soon is) dead to Ray
        return node

    def live_ips(self) -> list[str]:
        return [node.ip for node in self.nodes if not node.retired]

    def retire(self, index: int) -> None:
        """A lost machine that does not come back: whatever runs there is stopped, its namespace removed."""
        self._stop_node(index)
        subprocess.run(["ip", "netns", "del", self.nodes[index].netns], capture_output=True, timeout=30)
        self.nodes[index].retired = True

    def cut(self, index: int) -> None:
        _ip("link", "set", self.nodes[index].port, "down", netns=self.hub)

    def restore(self, index: int) -> None:
        _ip("link", "set", self.nodes[index].port, "up", netns=self.hub)

    # ---- Ray ----
    def env(self) -> dict[str, str]:
        """What every process here gets: this venv first, the repo importable, token auth with our token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {**env, "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}", "PYTHONPATH": str(REPO),
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token), "RAY_USAGE_STATS_ENABLED": "0"}

    def in_node(self, index: int, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.nodes[index].netns, *cmd]

    def start_head(self) -> None:
        head = self.nodes[0]
        env = {**self.env(), "RAY_PORT": str(self.port), "DASHBOARD_PORT": str(self.dashboard),
               "DASHBOARD_HOST": head.ip, **HEALTH_CHECKS}
        # no CPUs: every actor goes to a worker node; the driver runs here
        args = ["--node-ip-address", head.ip, "--temp-dir", head.temp_dir, "--num-cpus", "0"]
        self._run(0, [str(REPO / "launch" / "start_head.sh"), *args], env)

    def start_worker(self, index: int) -> None:
        node = self.nodes[index]
        args = [f"{self.nodes[0].ip}:{self.port}", "--node-ip-address", node.ip, "--temp-dir", node.temp_dir,
                "--num-cpus", str(self.cpus_per_worker), "--resources", json.dumps(node.resources)]
        self._run(index, [str(REPO / "launch" / "start_worker.sh"), *args], self.env())

    def _run(self, index: int, cmd: list[str], env: dict[str, str]) -> None:
        done = subprocess.run(self.in_node(index, cmd), env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"node {index}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"

    def alive(self) -> int:
        """How many nodes Ray counts alive (the head included), asked from the head's namespace."""
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print('alive=%d' % sum(1 for n in ray.nodes() if n['Alive']))")
        out = subprocess.run(self.in_node(0, [sys.executable, "-c", probe, self.address]), env=self.env(),
                             capture_output=True, text=True, timeout=120)
        found = re.search(r"^alive=(\d+)$", out.stdout, flags=re.MULTILINE)  # Ray may print warnings around it
        assert out.returncode == 0 and found, out.stdout[-1000:] + out.stderr[-2000:]
        return int(found.group(1))

    def wait_nodes(self, alive: int, timeout_s: float = 120) -> None:
        """Until exactly `alive` nodes are alive (the head included)."""
        deadline = time.monotonic() + timeout_s
        while (count := self.alive()) != alive:
            assert time.monotonic() < deadline, f"{alive} nodes wanted, {count} alive"
            time.sleep(2)

    @property
    def address(self) -> str:
        return f"{self.nodes[0].ip}:{self.port}"

    def driver(self, args: list[str], **popen: object) -> subprocess.Popen:
        """`rlhf-dist ARGS --cluster.address HEAD` as a driver in the head's namespace."""
        cmd = [sys.executable, "-m", "rlhf_dist.cli", *args, "--cluster.address", self.address]
        return subprocess.Popen(self.in_node(0, cmd), env=self.env(), cwd=REPO, **popen)

    def node_processes(self, index: int) -> list:
        """Every process of node `index`: named after its temp dir, or holding a file under it, and children."""
        import psutil

        temp_dir, me, found = self.nodes[index].temp_dir, os.getpid(), {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                named = any(temp_dir in arg for arg in (proc.info["cmdline"] or []))
                holds = named or any(f.path.startswith(temp_dir) for f in proc.open_files())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if holds and proc.pid != me:
                for p in [proc, *proc.children(recursive=True)]:
                    found[p.pid] = p
        return list(found.values())

    def kill_node(self, index: int) -> list[int]:
        """SIGKILL every process of a node at once (raylet included): a machine that vanished."""
        procs = self.node_processes(index)
        for proc in procs:
            try:
                proc.kill()
            except Exception:  # already gone
                pass
        return [p.pid for p in procs]

    def stop(self) -> None:
        """Stop Ray on every node, workers first (by pid: only what was started here)."""
        for index in reversed(range(len(self.nodes))):
            self._stop_node(index)

    def _stop_node(self, index: int) -> None:
        import psutil

        procs = self.node_processes(index)
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            proc.kill()

    def remove_network(self) -> None:
        for node in reversed(self.nodes):
            subprocess.run(["ip", "netns", "del", node.netns], capture_output=True, timeout=30)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.remove_network()
            shutil.rmtree(self.base, ignore_errors=True)

    def start(self) -> NetnsCluster:
        self.base.mkdir(exist_ok=True)
        self.token.write_text(secrets.token_hex(32) + "\n")
        self.token.chmod(0o600)
        self.create_network()
        self.start_nodes()
        return self

    def start_nodes(self) -> None:
        """Ray on every node (again, after `stop`: a cluster brought back up on the same machines)."""
        live = [node for node in self.nodes if not node.retired]
        for node in live:
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        self.start_head()
        for node in live[1:]:
            self.start_worker(node.index)
        self.wait_nodes(len(live))
