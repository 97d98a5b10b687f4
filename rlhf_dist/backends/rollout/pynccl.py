"""vLLM's stateless NCCL communicator: the one vLLM piece of the NCCL weight sync, here because only
backends/rollout/ may import vLLM (tests/unit/test_layers.py). The transport and both of its ends are
backends/sync/transports/nccl.py.

CUDA only; written against vLLM 0.32's APIs and not exercised on the CPU machines CI uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def create_communicator(host: str, port: int, rank: int, world_size: int, device: torch.device) -> Any:
    """Join the sync group (a collective: every member calls it at the same time)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)
