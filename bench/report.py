"""Write the latest results (bench/results/*.json) into bench/README.md between the results markers.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

import argparse
import json

from bench.common import REPO, RESULTS

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _when(res: dict) -> str:
    m = res["machine"]
    return (f"{m.get('date', '?')}, {m.get('cpu_model', '?')} x{m.get('cpu_count')}, "
            f"load after {res.get('load_after')}, "
            f"commit {m.get('git_commit', '?')}{' (engine modified)' if m.get('engine_dirty') else ''}")


def _short(frame: str) -> str:
    """A C++ TensorIterator frame cut to its kernel name (e.g. fill_kernel)."""
    for marker in ("VectorizedLoop2d<", "loop_2d_from_1d<"):
        if marker in frame:
            inner = frame.split(marker, 1)[1]
            for prefix in ("at::native::", "AVX2::", "(anonymous namespace)::"):
                inner = inner.replace(prefix, "")
            return inner.split("(")[0] + " (libtorch_cpu.so)"
    return frame.replace("|", "/")[:90]


def _rate(res: dict) -> str:
    """The fp32 matmul rate the floors use, and what each library reached (results since the oneDNN check)."""
    text = f"fp32 matmul rate {res['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s"
    if by_lib := res.get("matmul_flops_per_s_by_library"):
        text += " (the faster of " + " / ".join(f"{k} {v / 1e9:.0f}" for k, v in by_lib.items()) + ")"
    return text


def section() -> str:
    out = []
    if res := _load("ppo_vs_trl"):
        out += ["### PPO vs TRL", "", f"Measured {_when(res)}; {_rate(res)} (all cores). "
                "floor/step = model FLOPs of a step / that rate.", "", res["table_markdown"], ""]
        for name, r in res["results"].items():
            s, summary = r["settings"], r["summary"]
            ratio = summary["ratio_episodes_per_s"]
            line = (f"- {name}: batch {s['batch']}, response {s['response']} tokens, {s['epochs']} PPO epoch(s) x "
                    f"{s['minibatches']} mini-batches, {s['warmup']} warm-up + {s['steps']} measured steps per run, "
                    f"{ratio['n']} repeats; ratio rlhf-dist/TRL median {ratio['median']:.2f} "
                    f"(range {ratio['min']:.2f}-{ratio['max']:.2f})")
            if tuned := summary.get("ratio_tuned_episodes_per_s"):
                line += f", tuned/TRL {tuned['median']:.2f} ({tuned['min']:.2f}-{tuned['max']:.2f})"
            out.append(line)
        if tuned := res.get("tuned"):
            out.append(f"- tuned = rlhf-dist with ppo.old_logprobs '{tuned['old_logprobs']}' and torch threads "
                       f"{tuned['role_threads']} (config options); arms alternate A/B/C, then C/B/A")
        out.append("")
    if res := _load("generation"):
        out += ["### Generation", "", f"Measured {_when(res)}; {_rate(res)}.", "", res["table_markdown"], "",
                "![generation](results/generation.png)", ""]
    if res := _load("phases"):
        out += ["### Phase breakdown", "", f"Measured {_when(res)}.", "", res["tables_markdown"]["phases"], "",
                res["tables_markdown"]["sync"], "", "![phases](results/phases.png)", ""]
    if res := _load("scaling"):
        out += ["### Scaling", "", f"Measured {_when(res)}; {_rate(res)}.", "", res["tables_markdown"]["batch"], "",
                res["tables_markdown"]["layout"], "",
                "![scaling](results/scaling.png)", ""]
    if res := _load("async"):
        out += ["### Async PPO (ppo.max_staleness)", "", f"Measured {_when(res)}.", ""]
        for key in ("speed", "parity"):
            if md := res.get("tables_markdown", {}).get(key):
                out += [md, ""]
        for name, r in res.get("speed", {}).items():
            out.append(f"- {name}: speedup_vs_sync {r['speedup_vs_sync']:.2f} ({r['sync_steps_per_s']:.3g} -> "
                       f"{r['async_steps_per_s']:.3g} steps/s, {len(r['runs']['sync'])} sync/async pair(s))"
                       + (f"; without each run's last step (no rollout generates beside it) "
                          f"{r['speedup_vs_sync_steady']:.2f}" if "speedup_vs_sync_steady" in r else "")
                       + (f"; hiding all of the sync run's generation would give at most "
                          f"{r['speedup_bound_hidden_generation']:.2f}x"
                          if "speedup_bound_hidden_generation" in r else ""))
        if "parity" in res:
            out += ["", "![async](results/async.png)"]
        out.append("")
    for name in sorted(p.stem for p in RESULTS.glob("profile_*.json")):
        res = _load(name)
        out += [f"### Profile ({name.removeprefix('profile_')})", "", f"Measured {_when(res)}; settings "
                f"zero_stage {res['settings']['zero_stage']}, patches {res['settings'].get('patches') or 'none'}.", "",
                res["table_markdown"], ""]
        if spy := res.get("py_spy"):
            out += [f"py-spy, hottest frames inside the timed phases ({spy['samples']} samples at 40 Hz):", "",
                    "| frame (self) | share |", "|---|---|"]
            out += [f"| `{_short(s['frame'])}` | {100 * s['share']:.1f}% |" for s in spy["self"][:10]]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()  # --help must not rewrite the README
    readme = REPO / "bench" / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{BEGIN}\n{section()}{END}{tail}")
    print(f"[bench] updated {readme.relative_to(REPO)}")


if __name__ == "__main__":
    main()
