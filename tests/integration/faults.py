"""Fault injection for the fault-tolerance tests: a reward function (it runs in the driver, once per step)
that, on chosen calls, sends a signal to one role's process, found through <run>/logs/<role>-<rank>.pid.

    RLHF_TEST_FAULT="<run dir>|<fault>[,<fault>...]"      <fault> = <role>-<rank>@<call>:<signal>[:<delay s>]

e.g. "runs/x|policy-1@3:SIGKILL,critic-0@5:SIGKILL:0.3". Calls are counted across restarts (a counter file
in the run dir), so a fault fires once even though the steps after a restart run again. Each fired fault
appends a line to <run>/fault-fired.txt. The delay sends the signal from a thread after the reward
returned (e.g. while the critic trains). Without the variable it is just the reward.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from rlhf_dist.eval.rules import lowercase_fraction_reward

ENV = "RLHF_TEST_FAULT"


def fault_spec(run_dir: Path, *faults: str) -> str:
    return f"{run_dir}|{','.join(faults)}"


def _count_call(run_dir: Path) -> int:
    counter = run_dir / "fault-calls.txt"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    return calls


def _fire(run_dir: Path, target: str, sig: str, delay: list[str]) -> None:
    pid = int((run_dir / "logs" / f"{target}.pid").read_text())
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
        run, faults = spec.split("|")
        run_dir = Path(run)
        call = _count_call(run_dir)
        for fault in faults.split(","):
            where, _, how = fault.partition(":")
            target, _, at = where.partition("@")
            sig, *delay = how.split(":")
            if int(at) == call:
                _fire(run_dir, target, sig, delay)
    return lowercase_fraction_reward(prompts, responses)
