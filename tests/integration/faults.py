"""Fault injection for the fault-tolerance tests: a reward function (it runs in the driver, once per step)
that, on its N-th call, sends a signal to one role's process, found through <run>/logs/<role>-<rank>.pid.

    RLHF_TEST_FAULT="<run dir>|<role>-<rank>|<call number>|<signal name>[|<delay s>]"

Fires once per run (a marker file in the run dir); without the variable it is just the reward.
The delay sends the signal from a thread after the reward returned (e.g. during training).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from rlhf_dist.eval.rules import lowercase_fraction_reward

ENV = "RLHF_TEST_FAULT"


def _count_call(run_dir: Path) -> int:
    counter = run_dir / "fault-calls.txt"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    return calls


def inject_once(prompts: list[str], responses: list[str]) -> list[float]:
    spec = os.environ.get(ENV)
    if spec:
        run, target, call, sig, *delay = spec.split("|")
        run_dir = Path(run)
        marker = run_dir / "fault-fired.txt"
        if _count_call(run_dir) == int(call) and not marker.exists():
            pid = int((run_dir / "logs" / f"{target}.pid").read_text())
            marker.write_text(f"{target} pid {pid} {sig}\n")
            send = lambda: os.kill(pid, getattr(signal, sig))  # noqa: E731
            if delay:
                threading.Timer(float(delay[0]), send).start()
            else:
                send()
    return lowercase_fraction_reward(prompts, responses)
