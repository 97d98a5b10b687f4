"""The user's console: one progress display per stage, log lines printed above it.

    with StageProgress("sampling pairs (vLLM)") as bar:        # unknown length: spinner + elapsed
        ...
    with StageProgress("reward model", total=155) as bar:      # bar, rate, ETA
        bar.advance(status="epoch 1/5 loss 0.41")

On a terminal the display redraws in place (rich). When stdout is not a terminal (CI, `| tee`)
it prints a plain line at most every PLAIN_EVERY_S seconds, and one when the stage ends.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

PLAIN_EVERY_S = 30.0


class _Stdout:
    """What the console writes to: sys.stdout as it is now, or a pinned copy of the real fd 1."""

    pinned: Any = None

    def write(self, text: str) -> int:
        return (self.pinned or sys.stdout).write(text)

    def flush(self) -> None:
        (self.pinned or sys.stdout).flush()

    def isatty(self) -> bool:
        target = self.pinned or sys.stdout
        return bool(getattr(target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return (self.pinned or sys.stdout).fileno()


_STDOUT = _Stdout()
_CONSOLE: Console | None = None


def console() -> Console:
    global _CONSOLE
    if _CONSOLE is None:
        _CONSOLE = Console(file=_STDOUT, highlight=False, soft_wrap=True)
    return _CONSOLE


def is_tty() -> bool:
    return _STDOUT.isatty() and os.environ.get("TERM") != "dumb"


def pin_console() -> bool:
    """Keep the console on the current terminal while fd 1 is redirected (quiet.output_to). True if pinned now."""
    if _STDOUT.pinned is not None:
        return False
    try:
        sys.stdout.flush()
        _STDOUT.pinned = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # no real fd (a test's capture object): leave as is
        return False
    return True


def unpin_console() -> None:
    if _STDOUT.pinned is not None:
        _STDOUT.pinned.close()
        _STDOUT.pinned = None


def say(text: str) -> None:
    """One line on the console (above a live progress display, if one is running)."""
    console().print(text, markup=False, highlight=False)


class ConsoleHandler(logging.Handler):
    """Log records through the shared console, so they never break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            say(self.format(record))
        except Exception:  # a logging handler must not raise
            self.handleError(record)


def fmt_seconds(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StageProgress:
    """A progress display for one long phase (see the module docstring)."""

    def __init__(self, desc: str, total: int | None = None, enabled: bool = True, every_s: float = PLAIN_EVERY_S,
                 plain_lines: bool = True):
        self.desc, self.total, self.enabled, self.every_s = desc, total, enabled, every_s
        self.plain_lines = plain_lines  # False: the caller prints its own line per item (PPO steps)
        self.done, self.status = 0, ""
        self.started = time.monotonic()
        self._last_line = self.started
        self._rich: Progress | None = None
        self._task = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self) -> "StageProgress":
        self.started = self._last_line = time.monotonic()
        if not self.enabled:
            return self
        if is_tty():
            columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
            if self.total:
                columns += [BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn("{task.fields[status]}"), TimeElapsedColumn()]
            if self.total:
                columns.append(TimeRemainingColumn())
            self._rich = Progress(*columns, console=console(), transient=False, redirect_stdout=False,
                                  redirect_stderr=False)
            self._task = self._rich.add_task(self.desc, total=self.total, status="")
            self._rich.start()
        else:
            say(f"{self.desc}: started" + (f" ({self.total} to do)" if self.total else ""))
            if not self.total:  # nothing will call advance(): say it is alive now and then
                self._ticker = threading.Thread(target=self._tick, daemon=True)
                self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            say(f"{self.desc}: running, {fmt_seconds(self.elapsed)} elapsed")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        if not self.total or not self.done:
            return None
        return self.elapsed / self.done * (self.total - self.done)

    def plain_line(self) -> str:
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        eta = self.eta()
        tail = f", ETA {fmt_seconds(eta)}" if eta is not None and self.done < (self.total or 0) else ""
        status = f" {self.status}" if self.status else ""
        return f"{self.desc} {count}{status} ({fmt_seconds(self.elapsed)} elapsed{tail})"

    def advance(self, n: int = 1, status: str = "") -> None:
        self.done += n
        self.status = status or self.status
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=n, status=self.status)
            return
        now = time.monotonic()
        if not self.plain_lines:
            return
        if now - self._last_line >= self.every_s or (self.total and self.done >= self.total):
            self._last_line = now
            say(self.plain_line())

    def print(self, text: str) -> None:
        say(text)

    def close(self, final: str = "") -> None:
        self._stop.set()
        if self._rich is not None:
            if final:
                self._rich.update(self._task, status=final)
            self._rich.stop()
            self._rich = None
        elif self.enabled and (not self.total or self.done < self.total or final):
            say(f"{self.desc}: done in {fmt_seconds(self.elapsed)}" + (f" ({final})" if final else ""))

    def __enter__(self) -> "StageProgress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def ppo_step_line(step: int, last: int, m: dict, eta_s: float | None) -> str:
    """The per-step line `rlhf-dist ppo` prints (README: per-step reward/KL)."""
    eta = f"  ETA {fmt_seconds(eta_s)}" if eta_s is not None and step < last else ""
    return (f"ppo step {step}/{last}  reward {m['reward/score_raw']:.3f}  kl {m['kl/seq_k1']:.3f}  "
            f"len {m['response/length']:.1f}  {m['time/step']:.1f} s/step{eta}")


def ppo_timing_table(history: list[dict]) -> str:
    """The mean per-phase timing table printed after PPO (README: a per-phase timing table)."""
    if not history:
        return "no PPO step ran"
    phases = sorted(k for k in history[0] if k.startswith("time/") and k != "time/step")
    total = sum(m["time/step"] for m in history) / len(history)
    lines = [f"PPO phase timing (mean over {len(history)} steps)", "phase                 mean_s   share"]
    for key in phases:
        mean = sum(m.get(key, 0.0) for m in history) / len(history)
        within = "  (inside training, concurrent)" if key in ("time/policy_train", "time/critic_train") else ""
        lines.append(f"{key[5:]:<20} {mean:>7.2f} {100 * mean / total:>6.1f}%{within}")
    lines.append(f"{'step':<20} {total:>7.2f}")
    return "\n".join(lines)
