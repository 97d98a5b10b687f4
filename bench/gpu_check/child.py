"""One row in its own process: `python -m bench.gpu_check.child MODULE:FUNCTION WORKDIR RESULT_JSON`.

Calls FUNCTION(Path(WORKDIR)) -> (value, note) and writes {"state", "value", "note" | "error"} to RESULT_JSON:
PASS on a return, SKIP on verdicts.Skip, FAIL on verdicts.CheckFailed or any other exception (its last line;
the traceback goes to the row's log). Exits with os._exit: a library's exit hook (vLLM, Ray) cannot hang
the row after its result is written; the runner kills what is left of the process group.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path

from bench.common import BASE_ENV
from bench.gpu_check.verdicts import CheckFailed, Skip


def error_line(err: BaseException) -> str:
    """The last non-empty line of an exception's message, with its type: what the table shows."""
    lines = [line for line in f"{type(err).__name__}: {err}".splitlines() if line.strip()]
    return lines[-1].strip()[:300]


def run(target: str, workdir: Path) -> dict:
    module, _, name = target.partition(":")
    try:
        value, note = getattr(importlib.import_module(module), name)(workdir)
        return {"state": "PASS", "value": value, "note": note}
    except Skip as why:
        return {"state": "SKIP", "value": None, "error": str(why)}
    except CheckFailed as err:
        return {"state": "FAIL", "value": err.value, "error": str(err)}
    except BaseException as err:  # noqa: BLE001 -- the row reports any error, the next row still runs
        traceback.print_exc()
        return {"state": "FAIL", "value": None, "error": error_line(err)}


def main(argv: list[str]) -> None:
    target, workdir, result = argv
    for key, value in BASE_ENV.items():  # quiet, offline libraries; set before anything imports them
        os.environ.setdefault(key, value)
    got = run(target, Path(workdir))
    tmp = Path(result + ".tmp")
    tmp.write_text(json.dumps(got))
    tmp.rename(result)  # whole or absent: a row killed mid-write leaves no half result
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
