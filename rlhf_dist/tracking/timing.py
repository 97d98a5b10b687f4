"""Per-phase wall-clock timing of one step: `with timer("generation"): ...`."""

from __future__ import annotations

import time
from contextlib import contextmanager


class PhaseTimer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def summary(self) -> dict[str, float]:
        """Each phase's seconds, the step total, and overhead = total minus the phases."""
        total = time.perf_counter() - self.started
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        out["time/step"] = total
        out["time/overhead"] = max(0.0, total - sum(self.seconds.values()))
        return out
