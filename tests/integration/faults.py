"""Fault injection for the fault-tolerance tests: a reward function (it runs in the driver, once per step)
that signals one role's process, found through <run>/logs/<role>-<rank>.pid.

    RLHF_TEST_FAULT="<run dir>|<first call>|<fault>[,<fault>...]"      <fault> = <role>-<rank>:<signal>[:<delay s>]

e.g. "runs/x|3|policy-1:SIGKILL,critic-0:SIGKILL:0.3". The first fault fires at call <first call>; each next
one at the first call after a restart (some role's pid changed since the last fault: a restart replaces only
the failed roles), so every fault lands after the previous one was recovered from, whatever the timing.
Each fired fault appends a line to <run>/fault-fired.txt. The delay sends the signal from a thread after
the reward returned (e.g. while the critic trains). Without the variable it is just the reward.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from rlhf_dist.eval.rules import lowercase_fraction_reward

ENV = "RLHF_TEST_FAULT"


def fault_spec(run_dir: Path, first_call: int, *faults: str) -> str:
    return f"{run_dir}|{first_call}|{','.join(faults)}"


def _pid(run_dir: Path, target: str) -> int:
    return int((run_dir / "logs" / f"{target}.pid").read_text())


def _all_pids(run_dir: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text()) for path in sorted((run_dir / "logs").glob("*.pid"))}


def _fire(run_dir: Path, target: str, sig: str, delay: list[str]) -> None:
    pid = _pid(run_dir, target)
    with open(run_dir / "fault-fired.txt", "a") as fired:
        fired.write(f"{target} pid {pid} {sig}\n")
    send = lambda: os.kill(pid, getattr(signal, sig))  # noqa: E731
    if delay:
        threading.Timer(float(delay[0]), send).start()
    else:
        send()


def inject_once(prompts: list[str], responses: list[str]) -> list[float]:
    spec = os.environ.get(ENV)
    if spec:
        run, first_call, faults = spec.split("|")
        run_dir = Path(run)
        state_file = run_dir / "fault-state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {"calls": 0, "fired": 0, "pids": None}
        state["calls"] += 1
        todo = faults.split(",")[state["fired"]:]
        rebuilt = state["pids"] is None or _all_pids(run_dir) != state["pids"]
        if todo and state["calls"] >= int(first_call) and rebuilt:
            target, sig, *delay = todo[0].split(":")
            state["pids"] = _all_pids(run_dir)
            state["fired"] += 1
            _fire(run_dir, target, sig, delay)
        state_file.write_text(json.dumps(state))
    return lowercase_fraction_reward(prompts, responses)
