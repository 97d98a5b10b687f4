"""`make gpu-check` on a machine without CUDA: one line, exit 77, nothing run and nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_check import NO_GPU_EXIT, Row, _line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run `make gpu-check` itself")
def test_without_cuda_says_so_in_one_line_and_exits_77(tmp_path):
    out = tmp_path / "table.json"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert proc.returncode == NO_GPU_EXIT == 77
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA GPU here") and "nothing run" in lines[0]
    assert not out.exists()  # no table, no fake result


def test_a_row_shows_name_state_number_and_seconds():
    line = _line(Row("sync-nccl", "fail", 3.2e-5, "max|dlp|", 12.34, "boom"))
    assert line.split()[:4] == ["sync-nccl", "fail", "3.2e-05", "max|dlp|"] and "12.3s" in line and "boom" in line
