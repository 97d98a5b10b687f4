"""The quick commands start without the heavy stack: `import rlhf_dist.cli`, the parser, `config validate`,
`plan` and `feedback stats` never import torch, transformers, Ray, DeepSpeed or vLLM (each costs seconds).

Each check runs in a fresh interpreter (this test process has torch loaded already) and reads sys.modules
when the command is done.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "ray", "deepspeed", "vllm")

# Runs argv (a JSON list) through cli.main, or only builds the parser for "parser"; prints the exit code and
# the heavy packages then in sys.modules as the last line.
PROBE = """
import json, sys
from rlhf_dist.cli import build_parser, main
argv = json.loads(sys.argv[1])
if argv == ["parser"]:
    build_parser()
    rc = 0
else:
    try:
        rc = main(argv)
    except SystemExit as exit_:
        rc = exit_.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


def _probe(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_and_building_its_parser_imports_no_heavy_package():
    done = _probe(["parser"])
    assert done == {"rc": 0, "heavy": []}


@pytest.mark.parametrize("argv", [
    ["config", "validate", "configs/tiny.yaml"],
    ["plan", "configs/tiny.yaml"],
    # a GPU layout: sleeping engines ask the LoRA sync rule (backends/sync/transports/lora.py), still without torch
    ["plan", "configs/llama8b-1node-8gpu.yaml"],
])
def test_config_only_commands_import_no_heavy_package(argv):
    done = _probe(argv)
    assert done["heavy"] == [], f"{' '.join(argv)} imported {done['heavy']}"
    assert done["rc"] in ((0,) if "tiny" in argv[-1] else (0, 1))  # plan: 1 = does not fit the hardware


def test_feedback_stats_imports_no_heavy_package(tmp_path):
    done = _probe(["feedback", "stats", "--json", "--run.output_dir", str(tmp_path)])
    assert done == {"rc": 0, "heavy": []}
    assert (tmp_path / "feedback.sqlite").is_file()  # it did open (and create) the database
