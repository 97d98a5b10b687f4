"""The one door to torch.distributed collectives: tensors travel on the process group's device.

NCCL takes CUDA tensors only (a CPU tensor fails with "No backend type associated with device type
cpu"), gloo takes CPU tensors. A caller hands any tensor here; it is staged to the group's device and
the answer lands back in the caller's tensor, on the caller's device. So CPU CI (gloo) runs the same
call sites a GPU run (NCCL) does. tests/unit/test_collectives.py fails if a module of rlhf_dist calls
a torch.distributed (or deepspeed.comm) collective anywhere else.

torch.distributed must be initialised first (backends/train/dist.py init_distributed).
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
import torch.distributed as tdist

Number = TypeVar("Number", int, float)
ReduceName = Literal["sum", "max", "min"]
_OPS = {"sum": tdist.ReduceOp.SUM, "max": tdist.ReduceOp.MAX, "min": tdist.ReduceOp.MIN}


def group_device(group: tdist.ProcessGroup | None = None) -> torch.device:
    """Where `group`'s (default: the default group's) collectives want their tensors.

    'nccl' alone: this rank's current CUDA device (init_distributed set it from LOCAL_RANK). Anything
    else ('gloo', or a mixed 'cpu:gloo,cuda:nccl' group that takes CPU tensors too): the CPU."""
    backend = str(tdist.get_backend(group)).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_(tensor: torch.Tensor, op: ReduceName = "sum",
                group: tdist.ProcessGroup | None = None) -> torch.Tensor:
    """In place like torch.distributed.all_reduce, for a tensor on any device; returns `tensor`."""
    if op not in _OPS:
        raise ValueError(f"all_reduce_: op must be one of {', '.join(_OPS)}, got '{op}'")
    device = group_device(group)
    if tensor.device == device and tensor.is_contiguous():
        tdist.all_reduce(tensor, op=_OPS[op], group=group)
        return tensor
    staged = tensor.to(device).contiguous()  # a copy even where only contiguity differed
    tdist.all_reduce(staged, op=_OPS[op], group=group)
    tensor.copy_(staged)
    return tensor


def group_max(value: Number) -> Number:
    """The largest `value` over the ranks of the default group (an int stays an int, a float a float).

    A collective: every rank must call it."""
    dtype = torch.float64 if isinstance(value, float) else torch.long
    flag = all_reduce_(torch.tensor([value], dtype=dtype), "max")
    return type(value)(flag.item())
