"""CUDA IPC transport (colocated engines): no copy leaves the GPU.

Under colocation a vLLM worker shares its GPU with a policy rank. For each bucket every policy rank
gathers the bucket (under ZeRO-3 they all hold it during the gather anyway) and exports CUDA IPC
handles of its tensors, tagged with its GPU's UUID; each vLLM worker opens the handles of the rank on
its own GPU, loads the weights (a device-to-device copy) and drops them; then the policy ranks release
the bucket. Peers do the same (veRL, OpenRLHF): NCCL cannot connect two ranks on one device.

Both ends live here: share_tensors (each policy rank, workers/trainers.py) and open_shared (each vLLM
worker, backends/rollout/vllm_worker_ext.py). Written against torch 2.x's CUDA IPC
(torch.multiprocessing.reductions); not exercised on the CPU machines CI uses (`make gpu-check` runs it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlhf_dist.backends.sync.base import Waitable, WeightSync
from rlhf_dist.backends.sync.registry import TRANSPORTS

if TYPE_CHECKING:
    import torch

# reduce_tensor's rebuild arguments: index 6 is the CUDA device index in the SENDER's numbering.
_DEVICE_ARG = 6


@TRANSPORTS.register("cuda_ipc", devices=("cuda",), needs_vllm=True, colocation="required",
                     why="CUDA IPC hands weights to an engine on the same GPU only")
class CudaIpcSync(WeightSync):
    """CUDA IPC handles between a policy rank and the engine on its own GPU (no copy leaves the device)."""

    window = 1  # the gathered bucket stays alive on every rank until the engines loaded it

    def send(self, index: int) -> list[Waitable]:
        shared = self.policy.share_weight_bucket(index).result(timeout_s=self.cfg.sync_timeout_s)
        try:
            self.rollout.receive_shared_weights(shared).result(timeout_s=self.cfg.sync_timeout_s)
        finally:
            release = self.policy.release_weight_bucket()
        return [release]


def device_uuid(device: torch.device) -> str:
    import torch

    return str(torch.cuda.get_device_properties(device).uuid)


def share_tensors(named: list[tuple[str, torch.Tensor]]) -> tuple[str, list[tuple[str, Any]]]:
    """(this GPU's UUID, [(name, IPC handle)]): the handles stay valid while the tensors live."""
    from torch.multiprocessing.reductions import reduce_tensor

    if not named:
        return "", []
    uuid = device_uuid(named[0][1].device)
    return uuid, [(name, reduce_tensor(tensor.detach().contiguous())) for name, tensor in named]


def open_shared(shared: list[tuple[str, list[tuple[str, Any]]]],
                device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """The tensors shared by the policy rank on `device`'s GPU (none when no rank is there)."""
    mine = device_uuid(device)
    out = []
    for uuid, handles in shared:
        if uuid != mine:
            continue
        for name, (rebuild, args) in handles:
            args = list(args)
            args[_DEVICE_ARG] = device.index  # the same GPU, as this process numbers it
            out.append((name, rebuild(*args)))
    return out
