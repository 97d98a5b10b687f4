"""memory/<role>/peak_gib on CPU: the process's peak RSS (VmHWM), reset at every report."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.workers.base import take_peak_rss

MIB = 2**20


def test_peak_rss_covers_a_freed_tensor_and_resets_after_each_report():
    take_peak_rss()  # start a fresh window
    block = torch.ones(256 * MIB // 4)  # 256 MiB, every page written
    del block
    first = take_peak_rss()
    second = take_peak_rss()  # the block is gone: this window's peak is what stays resident
    if second == first:
        pytest.skip("this kernel refuses /proc/self/clear_refs: VmHWM is the peak since the process started")
    assert first - second >= 200 * MIB
