"""The sharded reference's pure parts: its DeepSpeed config and the chunk padding that keeps ranks in step."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.backends.train.frozen import zero3_inference_config
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.workers.inference import _padded_to


def test_zero3_inference_config_has_no_optimizer_and_follows_the_dtype():
    cfg = zero3_inference_config("bfloat16", world_size=4)
    assert cfg["zero_optimization"]["stage"] == 3 and "optimizer" not in cfg
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    assert cfg["train_batch_size"] == 4 * cfg["train_micro_batch_size_per_gpu"]
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        zero3_inference_config("int8", 2)


def _inputs(rows: int) -> ModelInputs:
    return ModelInputs(torch.arange(rows * 6).view(rows, 6), torch.ones(rows, 6, dtype=torch.long), torch.ones(rows, 2))


def test_padding_repeats_the_first_row_and_keeps_the_real_ones_first():
    padded = _padded_to(_inputs(3), 4)
    assert len(padded) == 4
    assert torch.equal(padded.sequences[:3], _inputs(3).sequences)
    assert torch.equal(padded.sequences[3], padded.sequences[0])
    assert _padded_to(_inputs(3), 2) is not None and len(_padded_to(_inputs(3), 2)) == 3  # never cut


def test_an_empty_shard_pads_with_a_row_of_the_same_width():
    empty = _inputs(3).select(slice(0, 0))
    padded = _padded_to(empty, 2)
    assert padded.sequences.shape == (2, 6) and padded.response_width == 2
    assert padded.action_mask.sum() == 0  # nothing of it is ever read back
