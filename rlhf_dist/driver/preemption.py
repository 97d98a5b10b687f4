"""SIGTERM / SIGINT -> stop at the next safe point (the end of a PPO step), after a checkpoint.

    with PreemptionGuard() as guard:
        for step in ...:
            ...
            if guard.requested:   # checkpoint, then raise Preempted (exit code EXIT_PREEMPTED)

A second Ctrl-C stops at once (KeyboardInterrupt), as users expect. Installed after ray.init, which
sets its own handlers; the previous handlers come back on exit. Only in the main thread (Python
delivers signals there); elsewhere the guard does nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
    def __init__(self) -> None:
        self.requested: str | None = None  # name of the signal that asked us to stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = name
        log.warning("%s received: stopping after this step's checkpoint (Ctrl-C again stops at once)", name)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
