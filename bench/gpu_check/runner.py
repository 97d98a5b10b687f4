"""Runs the rows: each in its own process group with its own time limit, then one table and one JSON.

A row is `module:function` run by `python -m bench.gpu_check.child` in a new session; past its limit the whole
group (its Ray, vLLM and DeepSpeed processes too) gets SIGKILL and the row is FAILED with the reason, and the
next row starts on a clean GPU. No torch at import: the parent never touches the GPU itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NO_GPU_EXIT = 77  # the automake convention for "skipped": distinct from pass (0) and fail (1)
STATES = ("PASS", "FAIL", "SKIP")
MIN_ROW_S = 5.0  # a row with less than this left of the budget is not started


@dataclass(frozen=True)
class Check:
    name: str
    target: str  # "module:function", function(workdir: Path) -> (value, note)
    unit: str  # what the row's number is
    limit_s: float  # the row's own time limit
    gpus: int = 1  # fewer on this machine: SKIP, not run
    why_gpus: str = ""  # why it needs that many


@dataclass
class Row:
    name: str
    state: str  # PASS | FAIL | SKIP
    value: float | None
    unit: str
    seconds: float
    error: str = ""  # FAIL / SKIP: why
    note: str = ""  # PASS: what was measured besides the number
    log: str = ""  # the row's stdout + stderr


def _kill_group(pgid: int) -> None:
    """SIGKILL the row's whole process group: the row, and the Ray / vLLM / DeepSpeed processes it started."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    return lines[-1].strip()[:200] if lines else "(empty log)"


def run_row(check: Check, limit_s: float, workdir: Path) -> Row:
    """Run one row in a child process group; FAIL on timeout, a crash without a result, or an error."""
    workdir = workdir.resolve()  # the child runs in the repo root
    log, result = workdir / f"{check.name}.log", workdir / f"{check.name}.result.json"
    result.unlink(missing_ok=True)
    row_dir = workdir / check.name
    row_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.gpu_check.child", check.target, str(row_dir),
                                 str(result)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(proc.pid)  # leftovers too (a Ray cluster the row started), so the next row starts clean
            proc.wait()
    seconds = time.monotonic() - start
    base = {"name": check.name, "unit": check.unit, "seconds": seconds, "log": str(log)}
    if code is None:
        limit = "row limit" if limit_s >= check.limit_s else "what was left of the budget"
        return Row(state="FAIL", value=None, error=f"timed out after {limit_s:.0f} s ({limit}); last log line: "
                   f"{_last_line(log)}", **base)
    if not result.is_file():
        return Row(state="FAIL", value=None, error=f"exited {code} without a result; last log line: "
                   f"{_last_line(log)}", **base)
    got = json.loads(result.read_text())
    return Row(state=got["state"], value=got.get("value"), error=got.get("error", ""), note=got.get("note", ""),
               **base)


def run_all(checks: list[Check], budget_s: float, gpus: int, workdir: Path, echo: bool = True) -> list[Row]:
    """Every check in order: each gets min(its limit, the budget left); a check needing more GPUs than `gpus`
    is SKIP unrun; one left without time is FAIL unrun (the table claims nothing it did not measure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows, begin = [], time.monotonic()
    if echo:
        print(table_header(), flush=True)
    for check in checks:
        left = budget_s - (time.monotonic() - begin)
        if check.gpus > gpus:
            why = f": {check.why_gpus}" if check.why_gpus else ""
            row = Row(check.name, "SKIP", None, check.unit, 0.0, error=f"needs {check.gpus} GPUs, {gpus} here{why}")
        elif left < MIN_ROW_S:
            row = Row(check.name, "FAIL", None, check.unit, 0.0, error=f"not run: the {budget_s:.0f} s budget is spent")
        else:
            row = run_row(check, min(check.limit_s, left), workdir)
        rows.append(row)
        if echo:
            print(table_line(row), flush=True)
    return rows


def _number(row: Row) -> str:
    if row.value is None:
        return "-"
    text = f"{row.value:.3g}" if abs(row.value) < 1e4 else f"{row.value:,.0f}"
    return f"{text} {row.unit}"


def table_header() -> str:
    return f"{'name':<20} {'state':<5} {'number':>22} {'seconds':>8}  error / note"


def table_line(row: Row) -> str:
    return f"{row.name:<20} {row.state:<5} {_number(row):>22} {row.seconds:8.1f}  {row.error or row.note}"


def format_table(rows: list[Row]) -> str:
    counts = ", ".join(f"{sum(r.state == s for r in rows)} {s}" for s in STATES)
    return "\n".join([table_header(), *map(table_line, rows), counts])


def write_results(rows: list[Row], path: Path, meta: dict) -> None:
    """bench/results/gpu_check.json: the machine (`meta`), the counts and every row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {s.lower(): sum(r.state == s for r in rows) for s in STATES}
    path.write_text(json.dumps({**meta, **counts, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")


def exit_code(rows: list[Row]) -> int:
    """1 when any row FAILED, else 0 (SKIP rows do not fail the check)."""
    bad = [r for r in rows if r.state not in STATES]
    if bad:
        raise ValueError(f"row {bad[0].name} has state {bad[0].state!r}, not one of {STATES}")
    return 1 if any(r.state == "FAIL" for r in rows) else 0


def _select(checks: list[Check], only: str) -> list[Check]:
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(names) - {c.name for c in checks})
    if unknown:
        raise SystemExit(f"gpu-check: --only: no row named {', '.join(unknown)} "
                         f"(rows: {', '.join(c.name for c in checks)})")
    return [c for c in checks if c.name in names] if names else checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description="`make gpu-check`: the GPU "
                                     "paths as one table (bench/gpu_check/__init__.py lists the rows)")
    parser.add_argument("--out", default="bench/results/gpu_check.json", help="where the table goes as JSON")
    parser.add_argument("--budget-s", type=float, default=480.0, help="all rows together; a row left without "
                        "time is FAIL")
    parser.add_argument("--work-dir", default="bench/out/gpu_check", help="each row's log and run dir "
                        "(emptied first)")
    parser.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): "
              f"nothing run, exit {NO_GPU_EXIT}")
        return NO_GPU_EXIT
    from bench.gpu_check.rows import CHECKS

    checks = _select(CHECKS, args.only)
    props, gpus = torch.cuda.get_device_properties(0), torch.cuda.device_count()
    workdir = Path(args.work_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    begin = time.monotonic()
    rows = run_all(checks, args.budget_s, gpus, workdir)
    out = Path(args.out)
    write_results(rows, out, {"device": props.name, "gpus": gpus, "gpu_mem_gib": round(props.total_memory / 2**30, 1),
                              "torch": torch.__version__, "budget_s": args.budget_s,
                              "seconds": round(time.monotonic() - begin, 1),
                              "date": datetime.datetime.now().isoformat(timespec="seconds")})
    print(f"{format_table(rows).splitlines()[-1]}; table in {out}, logs in {workdir}/")
    return exit_code(rows)
