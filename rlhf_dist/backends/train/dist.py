"""torch.distributed / DeepSpeed process-group setup for training ranks.

The caller (a Ray actor group, torchrun, a test) sets the usual environment variables
on every rank before calling `init_distributed`:

    MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK

DeepSpeed is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Literal

from rlhf_dist.backends.patches import disable_deepspeed_cpu_shm_op

REQUIRED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def interface_of(address: str) -> str | None:
    """The name of this machine's network interface that holds `address` (None if none does)."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == address for a in addresses):
            return name
    return None


def use_interface_of(address: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Make gloo (and NCCL's bootstrap) talk over the interface of this rank's cluster address.

    Left alone, gloo picks the address the hostname resolves to, which on many distributions (Debian, Ubuntu:
    127.0.1.1 in /etc/hosts) is a loopback one: ranks on other nodes are then refused. A value the user set
    wins. environ: os.environ unless given."""
    environ = os.environ if environ is None else environ
    iface = interface_of(address)
    if iface is not None:
        environ.setdefault("GLOO_SOCKET_IFNAME", iface)
        environ.setdefault("NCCL_SOCKET_IFNAME", iface)


def init_distributed(backend: Literal["gloo", "nccl"] = "gloo", timeout_s: float | None = None) -> None:
    """Initialise torch.distributed and DeepSpeed's comm layer from the environment. Idempotent.

    Reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK (all must be set). With
    "nccl" the rank's CUDA device is set from LOCAL_RANK first.
    """
    import torch.distributed as tdist

    import deepspeed
    import deepspeed.comm as ds_comm

    disable_deepspeed_cpu_shm_op()
    if tdist.is_available() and tdist.is_initialized():
        if not ds_comm.is_initialized():  # torch.distributed set up elsewhere: adopt its group
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
        return
    missing = [name for name in REQUIRED_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(f"init_distributed: environment variables not set: {', '.join(missing)}")
    if backend == "nccl":
        from deepspeed.accelerator import get_accelerator

        get_accelerator().set_device(int(os.environ["LOCAL_RANK"]))
    kwargs = {}
    if timeout_s is not None:
        kwargs["timeout"] = timedelta(seconds=timeout_s)
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False, **kwargs)
