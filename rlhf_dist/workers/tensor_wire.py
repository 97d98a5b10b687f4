"""How weight buckets travel through Ray's object store: as numpy arrays, not torch tensors.

Ray stores a numpy array as raw bytes and hands the receiver a zero-copy view of the shared
memory; a torch tensor is pickled through `torch.save` and rebuilt with `torch.load` (two
full copies). For SmolLM2-135M that halved the object-store sync (2.02 s -> 0.89 s, with
the tied lm_head left out; bench/README.md). numpy has no bfloat16, so a bf16 tensor goes as
its int16 bit pattern plus the dtype name.

    wire = tensors_to_wire(bucket)        # [(name, np.ndarray, dtype name)]  (sender)
    bucket = tensors_from_wire(wire)      # [(name, torch.Tensor)]            (receiver)

Received tensors are read-only views of the object store: consumers copy them into their own
weights (vLLM's weight loaders and `load_state_dict` both do).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

WireTensor = tuple[str, np.ndarray, str]

# numpy has no such dtype: send the bit pattern as a same-width integer and view it back.
_BIT_VIEWS = {torch.bfloat16: torch.int16}


def tensors_to_wire(named: list[tuple[str, torch.Tensor]]) -> list[WireTensor]:
    out = []
    for name, tensor in named:
        tensor = tensor.detach().cpu()
        dtype_name = str(tensor.dtype).removeprefix("torch.")
        view = _BIT_VIEWS.get(tensor.dtype)
        out.append((name, (tensor.view(view) if view is not None else tensor).numpy(), dtype_name))
    return out


def tensors_from_wire(wire: list[WireTensor]) -> list[tuple[str, torch.Tensor]]:
    out = []
    with warnings.catch_warnings():  # "non-writable array": consumers copy, never write in place
        warnings.simplefilter("ignore", UserWarning)
        for name, array, dtype_name in wire:
            dtype = getattr(torch, dtype_name, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"weight bucket tensor {name!r}: unknown dtype {dtype_name!r}")
            tensor = torch.from_numpy(array)
            out.append((name, tensor.view(dtype) if dtype in _BIT_VIEWS else tensor))
    return out
