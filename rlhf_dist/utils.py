"""Small helpers every layer may use (the bottom of the import graph: no Ray, no engines).

    seed_everything(seed)         python, numpy and torch RNGs
    write_json(path, payload)     atomic JSON write (temp file, then rename)
    free_port(host)               a TCP port free a moment ago
    prepare_run_dir(cfg)          create the run dir and record the resolved config in it
"""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlhf_dist.config import RLHFConfig


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (temp file, then rename): a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    tmp.replace(path)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the OS choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_output_dir(path: Path) -> None:
    """run.output_dir must be (or be creatable as) a writable directory: one clear ConfigError line if not."""
    from rlhf_dist.config import ConfigError

    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if path.exists() and not path.is_dir():
        raise ConfigError([f"run.output_dir: '{path}' is a file, not a directory (pick another run.output_dir)"])
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError([f"run.output_dir: '{path}' is not writable ({existing} is read-only for this user; "
                           "pick another run.output_dir)"])
    if existing is not None and not existing.is_dir():
        raise ConfigError([f"run.output_dir: '{path}' is under '{existing}', which is a file"])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct TCP ports free a moment ago (all bound at once, so none repeats)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def prepare_run_dir(cfg: RLHFConfig) -> Path:
    """Create the run directory and record the resolved config there."""
    from rlhf_dist.config import config_to_yaml, with_overrides
    from rlhf_dist.storage import remote_of

    run_dir = Path(cfg.run.output_dir)
    check_output_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (remote := remote_of(run_dir)) is not None:  # a staging dir (storage.localize): record the URI
        cfg = with_overrides(cfg, {"run.output_dir": "/".join(part for part in remote if part)})
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    return run_dir


# Exit code of a run stopped by SIGTERM/SIGINT after writing a checkpoint (EX_TEMPFAIL: "try again"):
# job schedulers requeue on it, and `--resume auto` continues from that checkpoint.
EXIT_PREEMPTED = 75


class Preempted(RuntimeError):
    """The run was asked to stop (SIGTERM/SIGINT) and wrote a checkpoint at a safe point first."""
