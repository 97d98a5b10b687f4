"""memory/<role>/peak_gib on CPU: the process's peak RSS (VmHWM), reset at every report."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_dist.workers.base import take_peak_rss

MIB = 2**20


def _clear_refs_permitted() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _touch_256_mib() -> None:
    block = torch.ones(256 * MIB // 4)  # 256 MiB, every page written
    del block


def test_peak_rss_covers_a_freed_tensor_and_resets_after_each_report():
    take_peak_rss()  # start a fresh window
    _touch_256_mib()
    first = take_peak_rss()
    second = take_peak_rss()  # the block is gone: this window's peak is what stays resident
    if _clear_refs_permitted():
        assert first - second >= 200 * MIB
    else:  # the documented fallback: the peak since the process started, never lower
        assert second >= first


def test_without_clear_refs_the_peak_since_start_is_reported(monkeypatch):
    """Where the kernel refuses the reset (some sandboxes), the report is VmHWM since start, not an error."""
    real_write = Path.write_text

    def refuse_clear_refs(self, *args, **kwargs):
        if str(self) == "/proc/self/clear_refs":
            raise PermissionError("not permitted")
        return real_write(self, *args, **kwargs)

    _touch_256_mib()
    monkeypatch.setattr(Path, "write_text", refuse_clear_refs)
    first = take_peak_rss()
    second = take_peak_rss()
    assert second >= first >= 256 * MIB  # the block still counts: nothing was reset
