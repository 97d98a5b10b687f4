"""Every collective goes through backends/train/collectives.py, which stages tensors on the group's device.

A CPU tensor all-reduced on an NCCL group fails on the GPU ("No backend type associated with device
type cpu") while gloo takes it, so a direct call elsewhere would pass CI and break the first GPU run.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from rlhf_dist.backends.train.collectives import all_reduce_, group_device, group_max
from rlhf_dist.utils import free_port

PACKAGE = Path(__file__).resolve().parents[2] / "rlhf_dist"
DIST_MODULES = {"torch.distributed", "deepspeed.comm"}
COLLECTIVES = {
    "all_reduce", "all_reduce_coalesced", "reduce", "broadcast", "broadcast_object_list", "all_gather",
    "all_gather_into_tensor", "all_gather_object", "all_gather_coalesced", "gather", "gather_object", "scatter",
    "scatter_object_list", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
    "barrier", "monitored_barrier", "send", "recv", "isend", "irecv", "batch_isend_irecv",
    "_all_gather_base", "_reduce_scatter_base",
}
# The one module allowed to call them. No other exemption is needed: the NCCL weight broadcast
# (backends/sync/transports/nccl.py, backends/rollout/pynccl.py) goes through vLLM's PyNcclCommunicator on a
# StatelessProcessGroup of its own, not torch.distributed, and its tensors are CUDA buffers already;
# CUDA IPC (backends/sync/transports/cuda_ipc.py) moves no tensor through any group. DeepSpeed's own collectives
# (ZeRO, GatheredParameters) are DeepSpeed's business: it puts their tensors on its device itself.
ALLOWED = {"backends/train/collectives.py"}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def direct_collectives(source: str) -> list[int]:
    """Lines of `source` that call (or import by name) a torch.distributed / deepspeed.comm collective."""
    tree = ast.parse(source)
    aliases, names, lines = set(DIST_MODULES), set(), []
    for node in ast.walk(tree):  # import torch.distributed as d / from torch import distributed as d / ...
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name in DIST_MODULES and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if f"{node.module}.{a.name}" in DIST_MODULES:
                    aliases.add(a.asname or a.name)
                elif node.module in DIST_MODULES and a.name in COLLECTIVES:
                    names.add(a.asname or a.name)
                    lines.append(node.lineno)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in COLLECTIVES and _dotted(func.value) in aliases) or (
                isinstance(func, ast.Name) and func.id in names):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_scan_finds_every_spelling_of_a_direct_collective():
    source = (
        "import torch\n"
        "import torch.distributed as dist\n"
        "from torch import distributed as d2\n"
        "from torch.distributed import barrier\n"
        "import deepspeed.comm as dscomm\n"
        "def f(t, comm):\n"
        "    dist.all_reduce(t)\n"                  # 7
        "    d2.broadcast(t, src=0)\n"              # 8
        "    torch.distributed.all_gather([t], t)\n"  # 9
        "    barrier()\n"                           # 10
        "    dscomm.all_reduce(t)\n"                # 11
        "    comm.broadcast(t, src=0)\n"            # a vLLM communicator: not torch.distributed
        "    dist.get_world_size()\n"               # not a collective
        "    t.gather(0, t)\n"                      # a tensor method
    )
    assert direct_collectives(source) == [4, 7, 8, 9, 10, 11]


def test_no_module_calls_torch_distributed_collectives_directly():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [f"rlhf_dist/{rel}:{line}" for line in direct_collectives(path.read_text())]
    assert not offenders, ("call rlhf_dist.backends.train.collectives (all_reduce_, group_max) instead of "
                           f"torch.distributed directly: {offenders}")
    for rel in ALLOWED:  # the allowance still points at the module that does the work
        assert direct_collectives((PACKAGE / rel).read_text())


# ---------------------------------------------------------------- 2 real processes over gloo
def _rank_main(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        summed = torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * (rank + 1)  # rank 0: x, rank 1: 2x
        maxed = torch.tensor([5, -rank * 7, rank], dtype=torch.long)
        column = torch.arange(6.0).reshape(2, 3) * (10 ** rank)
        column_view = column[:, 1]  # not contiguous: staged and copied back into the view
        results = {
            "device": str(group_device()),
            "int": group_max(3 - 4 * rank),        # 3, -1
            "float": group_max(0.25 + rank * 1.5),  # 0.25, 1.75
            "same_object": all_reduce_(summed, "sum") is summed,
            "sum": summed.tolist(),
            "max": all_reduce_(maxed, "max").tolist(),
            "min": all_reduce_(maxed.clone() - 10 * rank, "min").tolist(),
            "view": all_reduce_(column_view, "sum").tolist(),
            "column": column.tolist(),
            "devices": [str(t.device) for t in (summed, maxed, column_view)],
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.mark.timeout(60)  # a child stuck in a collective fails the test instead of holding the suite
def test_group_max_and_all_reduce_on_two_gloo_ranks(tmp_path):
    # fork: the children inherit the imports (a spawn re-imports torch and transformers: seconds on 2 cores)
    mp.start_processes(_rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["device"] == "cpu"  # gloo takes CPU tensors
        assert got["int"] == 3 and isinstance(got["int"], int)
        assert got["float"] == 1.75 and isinstance(got["float"], float)
        assert got["same_object"]  # in place, like torch.distributed.all_reduce
        assert got["sum"] == [[3.0, 6.0], [9.0, 12.0]]  # x + 2x
        assert got["max"] == [5, 0, 1]  # [5, 0, 0] vs [5, -7, 1]
        assert got["min"] == [-5, -10, -9]  # the max's answer [5, 0, 1] vs it minus 10 on rank 1
        assert got["view"] == [11.0, 44.0]  # column 1: [1, 4] + [10, 40]
        assert [row[1] for row in got["column"]] == [11.0, 44.0]  # written back into the base tensor
        assert got["column"][0][0] == 0.0 and got["column"][1][2] == 5.0 * 10 ** rank  # the rest untouched
        assert got["devices"] == ["cpu", "cpu", "cpu"]


def test_an_unknown_op_is_refused_in_one_line():
    with pytest.raises(ValueError, match="op must be one of sum, max, min, got 'avg'"):
        all_reduce_(torch.zeros(1), "avg")  # type: ignore[arg-type]
