"""Weight buckets as numpy arrays for Ray's object store: exact round trip, bf16 included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_dist.workers.tensor_wire import tensors_from_wire, tensors_to_wire


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_round_trip_is_bit_exact(dtype):
    torch.manual_seed(0)
    original = [("a.weight", (torch.randn(3, 5) * 100).to(dtype)), ("b.bias", torch.arange(4).to(dtype))]
    wire = tensors_to_wire(original)
    assert all(isinstance(array, np.ndarray) for _, array, _ in wire)  # what Ray ships without pickling torch
    back = tensors_from_wire(wire)
    assert [n for n, _ in back] == ["a.weight", "b.bias"]
    for (_, want), (_, got) in zip(original, back):
        assert got.dtype == dtype and got.shape == want.shape
        assert torch.equal(got.view(torch.uint8) if dtype.is_floating_point else got,
                           want.view(torch.uint8) if dtype.is_floating_point else want)


def test_bf16_travels_as_its_bit_pattern():
    wire = tensors_to_wire([("w", torch.tensor([1.0, -2.0], dtype=torch.bfloat16))])
    _, array, dtype_name = wire[0]
    assert array.dtype == np.int16 and dtype_name == "bfloat16"
    assert array.tolist() == [0x3F80, -0x4000]  # bf16 bits of 1.0 and -2.0 (0xC000 as int16)


def test_unknown_dtype_names_the_tensor():
    with pytest.raises(ValueError, match="'w': unknown dtype 'float99'"):
        tensors_from_wire([("w", np.zeros(2, dtype=np.float32), "float99")])
