"""NCCL transport (CUDA): policy rank 0 broadcasts each bucket GPU-to-GPU into every vLLM worker.

One communicator spans policy rank 0 (rank 0) and every vLLM worker of every engine (ranks 1..N; an
engine with tensor parallel size t owns t consecutive ranks). It is vLLM's PyNcclCommunicator on a
StatelessProcessGroup (backends/rollout/pynccl.py: the one vLLM piece, kept where vLLM may be imported), so
it never touches the trainers' own torch.distributed group. The tensors' names, dtypes and shapes come from
the bucket plan, so the workers allocate their receive buffers while the policy ranks gather. Buckets end
at layer boundaries: each holds whole fused layers (q/k/v, gate/up), loadable the moment it arrives.

Both ends live here: NcclSender (policy rank 0, workers/trainers.py) and receive_bucket (each vLLM worker,
backends/rollout/vllm_worker_ext.py). Written against vLLM 0.32/0.33; not exercised on the CPU machines CI
uses (`make gpu-check` runs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlhf_dist.backends.sync.base import Waitable, WeightSync
from rlhf_dist.backends.sync.buckets import TensorMeta, dtype_of
from rlhf_dist.backends.sync.registry import TRANSPORTS

if TYPE_CHECKING:
    import torch


@TRANSPORTS.register("nccl", devices=("cuda",), needs_vllm=True, colocation="forbidden",
                     why="NCCL refuses two ranks on one device")
class NcclSync(WeightSync):
    """An NCCL broadcast from policy rank 0 into the vLLM workers, GPU to GPU."""

    window = 1  # one communicator: buckets go through it one after the other

    def setup(self) -> None:
        """All members join at once: policy rank 0, then engine e's TP workers as ranks 1 + e * TP ..."""
        world = 1 + self.cfg.tensor_parallel_size * self.rollout.num_actors
        host, port = self.policy.weight_broadcast_rendezvous().result(timeout_s=self.cfg.sync_timeout_s)
        joins = self.rollout.init_weight_broadcast(host, port, world)
        self.policy.init_weight_broadcast(host, port, world).result(timeout_s=self.cfg.sync_timeout_s)
        joins.result(timeout_s=self.cfg.sync_timeout_s)

    def send(self, index: int) -> list[Waitable]:
        assert self.plan is not None
        receiving = self.rollout.receive_weights(self.plan[index].tensors)
        return [self.policy.broadcast_weight_bucket(index), receiving]


class NcclSender:
    """Policy rank 0's end: broadcasts tensors (rank 0 is always the source)."""

    def __init__(self, host: str, port: int, world_size: int):
        import torch

        from rlhf_dist.backends.rollout.pynccl import create_communicator

        self.device = torch.device("cuda", torch.cuda.current_device())
        self.comm = create_communicator(host, port, 0, world_size, self.device)

    def send(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        import torch

        stream = torch.cuda.current_stream()
        for _, tensor in bucket:
            self.comm.broadcast(tensor.to(self.device, non_blocking=True).contiguous(), src=0, stream=stream)
        stream.synchronize()


def receive_bucket(comm: Any, meta: list[TensorMeta], device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """A vLLM worker's end: allocate and receive each tensor of the bucket, in order."""
    import torch

    stream = torch.cuda.current_stream()
    out = []
    for m in meta:
        buffer = torch.empty(m.shape, dtype=dtype_of(m.dtype), device=device)
        comm.broadcast(buffer, src=0, stream=stream)
        out.append((m.name, buffer))
    stream.synchronize()
    return out
