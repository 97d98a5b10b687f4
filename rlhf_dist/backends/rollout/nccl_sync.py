"""GPU weight sync: policy rank 0 broadcasts each bucket over NCCL straight into vLLM workers.

One communicator spans policy rank 0 (rank 0) and every vLLM worker of every engine
(ranks 1..N; an engine with tensor parallel size t owns t consecutive ranks). It is built
with vLLM's StatelessProcessGroup + PyNcclCommunicator, so it never touches the trainers'
own torch.distributed group. Metadata (names, dtypes, shapes) travels through Ray; the
tensors travel GPU to GPU. Buckets end at layer boundaries, so each one holds whole fused
layers (q/k/v, gate/up) and a worker can load it the moment it arrives. The transport's bucket loop
is backends/sync/nccl.py; this module holds the vLLM-specific ends.

CUDA only; written against vLLM 0.32's APIs and not exercised on the CPU machines CI uses.
"""

from __future__ import annotations

import torch

from rlhf_dist.backends.sync.buckets import TensorMeta, dtype_of


def create_communicator(host: str, port: int, rank: int, world_size: int, device: torch.device):
    """Join the sync group (a collective: every member calls it at the same time)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


class NcclSender:
    """Policy rank 0's end: broadcasts tensors (rank 0 is always the source)."""

    def __init__(self, host: str, port: int, world_size: int):
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.comm = create_communicator(host, port, 0, world_size, self.device)

    def send(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        stream = torch.cuda.current_stream()
        for _, tensor in bucket:
            self.comm.broadcast(tensor.to(self.device, non_blocking=True).contiguous(), src=0, stream=stream)
        stream.synchronize()


def receive_bucket(comm, meta: list[TensorMeta], device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """A worker's end: allocate and receive each tensor of the bucket, in order."""
    stream = torch.cuda.current_stream()
    out = []
    for m in meta:
        buffer = torch.empty(m.shape, dtype=dtype_of(m.dtype), device=device)
        comm.broadcast(buffer, src=0, stream=stream)
        out.append((m.name, buffer))
    stream.synchronize()
    return out
