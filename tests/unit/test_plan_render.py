"""`rlhf-dist plan` text: every memory figure carries its unit (GiB or MiB), none is a bare number."""

from __future__ import annotations

import re

import pytest

from rlhf_dist.cluster.memory import GIB, MIB
from rlhf_dist.cluster.placement import parse_hardware
from rlhf_dist.cluster.plan import make_plan
from rlhf_dist.cluster.render import fmt, render_plan
from rlhf_dist.config import load_config


def test_fmt_names_the_unit():
    assert fmt(0) == "-"
    assert fmt(0.4 * MIB) == "0.4 MiB" and fmt(50 * MIB) == "50.0 MiB"
    assert fmt(0.25 * GIB) == "0.2 GiB" and fmt(140.6 * GIB) == "140.6 GiB"


@pytest.mark.parametrize("config, cluster", [("configs/tiny.yaml", None),
                                             ("configs/llama8b-1node-8gpu.yaml", "nodes=1,gpus_per_node=8")])
def test_memory_table_cells_all_have_units(config, cluster):
    cfg = load_config(config)
    text = render_plan(make_plan(cfg, parse_hardware(cluster, cfg)), config)
    table = text.split("memory per actor")[1].split("\n\n")[0].splitlines()[2:]
    assert table, text
    for row in table:
        cells = re.findall(r"-|\d+\.\d (?:GiB|MiB)", row.split(None, 1)[1])
        assert len(cells) == 11, row  # one per column: a size with its unit, or '-'
    loads = text.split("\nper ")[1]
    assert not re.search(r"\d\.\d(?! (GiB|MiB))", loads.split("\n\n")[0]), loads  # 'resident' etc. figures too
