"""Asynchronous PPO (ppo.max_staleness) vs the synchronous loop: step throughput and learning parity.

    .venv/bin/python -m bench.async_ppo [--parts speed,parity] [--sizes tiny,smollm2] [--repeats 2]
                                        [--smollm2-repeats 1] [--parity-steps 24] [--parity-seeds 0,1]

speed: per model, the rlhf-dist PPO arm of ppo_vs_trl (same presets, bench/arms.py's config) run
synchronously (ppo.max_staleness 0) and asynchronously (1: the next step's rollout generates on the
vLLM engine while this step scores, infers and trains), alternating the order per repeat, each run a
fresh process. steps/s = 1 / median step period of the measured steps (as ppo_vs_trl);
speedup_vs_sync = async steps/s / sync steps/s (median over repeats of the per-repeat ratios when
repeats pair up). The per-phase `time/*` medians explain where the time went: time/generation is the
driver's WAIT for the rollout (the whole generation when synchronous).

parity: the tiny model with a learnable rule reward (rlhf_dist.eval.rules:lowercase_fraction_reward,
the tiny preset's), the tiny preset's learning rate, more steps, sync vs async per seed; reward
against cumulative episodes (PNG) and the mean reward of the last k steps.

Each invocation updates only the parts/sizes it ran in bench/results/async.json, so the parts can
run separately (each under the machine's heavy-work lock).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

from bench.arms import DEFAULTS
from bench.common import (
    RESULTS, load, machine_info, median, model_dirs, other_cpu_users, print_table, quick_results, run_child, save_png,
    setup_env, spread, wait_quiet, write_result,
)
from bench.ppo_vs_trl import PRESETS as TRL_PRESETS

# ppo_vs_trl's presets, with more measured steps (async needs a few steps in flight to show its rate)
PRESETS = {"tiny": {**TRL_PRESETS["tiny"], "steps": 6}, "smollm2": {**TRL_PRESETS["smollm2"], "steps": 3}}
QUICK = {"tiny": {"steps": 2}, "smollm2": {"steps": 1}}
ARMS = {"sync": {"ppo": {"max_staleness": 0}}, "async": {"ppo": {"max_staleness": 1}}}
# Learning parity: the tiny preset's reward, lr and response length (configs/tiny.yaml), 1 rank per trainer
PARITY = {"size": "tiny", "batch": 16, "response": 8, "epochs": 2, "minibatches": 2, "warmup": 0, "lr": 5e-3,
          "overrides": {"ppo": {"rewards": [{"kind": "function",
                                             "function": "rlhf_dist.eval.rules:lowercase_fraction_reward"}]}}}
PHASES = ("generation", "scoring", "inference", "training", "policy_train", "critic_train", "sync", "step")
FINAL_K = 5


# ----------------------------------------------------------------------------- child process


def merge(base: dict, extra: dict) -> dict:
    """Nested dict merge (extra wins; lists and scalars replace)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def child(settings: dict[str, Any], json_path: str) -> None:
    """One rlhf-dist PPO run via bench.arms.run_rlhf, with config overrides and the full metric history.

    bench.arms.rlhf_config has no slot for arbitrary options: this process wraps build_config (which
    rlhf_config imports at call time) to merge `overrides` into its data, and run_ppo_stage to keep
    every metric (run_rlhf keeps only time/sync/response/reward-raw ones).
    """
    import rlhf_dist.config as config_mod
    import rlhf_dist.stages.ppo as stage_mod
    from bench.arms import run_rlhf

    s = {**DEFAULTS, **settings}
    build, run_stage, kept = config_mod.build_config, stage_mod.run_ppo_stage, {}
    config_mod.build_config = lambda data, **kw: build(merge(data, s.get("overrides", {})), **kw)

    def stage(*a, **kw):
        kept["result"] = run_stage(*a, **kw)
        return kept["result"]

    stage_mod.run_ppo_stage = stage
    threads = setup_env(None)
    load_before = load()
    out = run_rlhf(s)
    out["history_full"] = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in kept["result"].history]
    lengths = [h["response/length"] for h in out["history"]]
    if s["fixed_length"] and any(abs(x - s["response"]) > 1e-6 for x in lengths):
        raise SystemExit(f"response lengths {lengths} != fixed length {s['response']}")
    out.update(settings=s, load_before=load_before, load_after=load(), driver_threads=threads)
    Path(json_path).write_text(json.dumps(out, indent=1, default=str))


def run_arm(settings: dict[str, Any], args) -> dict[str, Any]:
    quiet = wait_quiet(args.max_load, args.wait_quiet)
    out = run_child(["-m", "bench.async_ppo", "child", "--settings", json.dumps(settings)], timeout_s=args.timeout)
    out["quiet"] = quiet
    return out


# ----------------------------------------------------------------------------- speed


def phase_medians(run: dict[str, Any], warmup: int) -> dict[str, float]:
    rows = run["history_full"][warmup:]
    return {p: median([r.get(f"time/{p}", float("nan")) for r in rows]) for p in PHASES}


def run_speed(name: str, args, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """previous: this size's earlier result; with --append its runs are kept and the repeats continue."""
    settings = {**PRESETS[name], **(QUICK[name] if args.quick else {})}
    model_dirs(settings["size"])  # build/convert once, before the children race for it
    repeats = args.smollm2_repeats if name == "smollm2" else args.repeats
    runs: dict[str, list] = {arm: [] for arm in ARMS}
    if args.append and previous and previous["settings"] == settings:
        runs = previous["runs"]
    first = len(runs["sync"])
    for rep in range(first, first + repeats):
        for arm in (list(ARMS) if rep % 2 == 0 else list(reversed(ARMS))):
            out = run_arm({**settings, "overrides": ARMS[arm]}, args)
            measured = out["periods"][settings["warmup"]:]
            out.update(repeat=rep, step_s=median(measured), measured_periods=measured,
                       phases=phase_medians(out, settings["warmup"]),
                       staleness=[r.get("async/staleness") for r in out["history_full"]])
            out["steps_per_s"] = 1.0 / out["step_s"]
            out.pop("history", None)  # history_full has it all
            runs[arm].append(out)
            print(f"[async_ppo] {name} rep {rep} {arm:5s}: step {out['step_s']:.3f}s  "
                  f"{out['steps_per_s']:.3f} steps/s  gen wait {out['phases']['generation']:.3f}s  "
                  f"load {out['quiet']['load_before'][0]}", flush=True)
    sync = [r["steps_per_s"] for r in runs["sync"]]
    asyn = [r["steps_per_s"] for r in runs["async"]]
    ratios = [a / s for a, s in zip(asyn, sync)]
    return {
        "settings": settings, "arms": ARMS, "runs": runs,
        "sync_steps_per_s": median(sync), "async_steps_per_s": median(asyn),
        "speedup_vs_sync": median(ratios), "speedup_per_repeat": ratios,
        "sync_periods": [r["measured_periods"] for r in runs["sync"]],
        "async_periods": [r["measured_periods"] for r in runs["async"]],
        "phases_s": {arm: {p: median([r["phases"][p] for r in rows]) for p in PHASES} for arm, rows in runs.items()},
        "steps_per_s_spread": {"sync": spread(sync), "async": spread(asyn)},
        # what hiding all of generation could give: sync step / (sync step - its generation), if the overlap were free
        "speedup_bound_hidden_generation": median([r["step_s"] / (r["step_s"] - r["phases"]["generation"])
                                                   for r in runs["sync"]]),
    }


def add_derived(r: dict[str, Any]) -> None:
    """Numbers derived from the stored runs (recomputed on every write).

    steady: without each run's last measured step. The async loop submits no rollout past the run's
    last step, so that step trains with nothing generating beside it and is faster than the ones before.
    """
    r["speedup_bound_hidden_generation"] = median(
        [x["step_s"] / (x["step_s"] - x["phases"]["generation"]) for x in r["runs"]["sync"]])
    steady = {arm: [1.0 / median(x["measured_periods"][:-1]) for x in r["runs"][arm]] for arm in ARMS}
    if all(len(x["measured_periods"]) > 1 for x in r["runs"]["sync"]):
        r["steady_steps_per_s"] = {arm: median(v) for arm, v in steady.items()}
        r["speedup_vs_sync_steady"] = median([a / s for a, s in zip(steady["async"], steady["sync"])])


# ----------------------------------------------------------------------------- parity


def run_parity(args) -> dict[str, Any]:
    settings = {**PARITY, "steps": args.parity_steps}
    model_dirs("tiny")
    curves: dict[str, list] = {arm: [] for arm in ARMS}
    for i, seed in enumerate(args.parity_seeds):
        for arm in (list(ARMS) if i % 2 == 0 else list(reversed(ARMS))):
            out = run_arm({**settings, "seed": seed, "overrides": merge(PARITY["overrides"], ARMS[arm])}, args)
            hist = out["history_full"]
            curves[arm].append({
                "seed": seed, "episodes": [r["step"] * settings["batch"] for r in hist],
                "reward": [r["reward/score_raw"] for r in hist],
                "staleness": [r.get("async/staleness") for r in hist],
                "offpolicy": {k: [r.get(k) for r in hist] for k in sorted({k for r in hist for k in r
                                                                           if k.startswith("offpolicy/")})},
                "final_mean": sum(r["reward/score_raw"] for r in hist[-FINAL_K:]) / min(FINAL_K, len(hist)),
                "first_mean": sum(r["reward/score_raw"] for r in hist[:FINAL_K]) / min(FINAL_K, len(hist)),
                "quiet": out["quiet"], "load_after": out["load_after"], "wall_s": out["wall_s"],
            })
            print(f"[async_ppo] parity seed {seed} {arm:5s}: reward first {FINAL_K} "
                  f"{curves[arm][-1]['first_mean']:.3f} -> last {FINAL_K} {curves[arm][-1]['final_mean']:.3f}",
                  flush=True)
    return {"settings": settings, "final_k": FINAL_K, "curves": curves,
            "final_mean_reward": {arm: median([c["final_mean"] for c in rows]) for arm, rows in curves.items()},
            "first_mean_reward": {arm: median([c["first_mean"] for c in rows]) for arm, rows in curves.items()}}


def plot_parity(parity: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = {"sync": "tab:blue", "async": "tab:orange"}
    for arm, rows in parity["curves"].items():
        for j, c in enumerate(rows):
            label = f"{arm} (max_staleness {ARMS[arm]['ppo']['max_staleness']})" if j == 0 else None
            ax.plot(c["episodes"], c["reward"], color=colors[arm], alpha=0.85, lw=1.4,
                    ls="-" if j == 0 else "--", label=label)
    s = parity["settings"]
    ax.set_xlabel("samples seen (cumulative episodes)")
    ax.set_ylabel("reward: lowercase fraction of response (0-1)")
    ax.set_title(f"tiny PPO, sync vs async: batch {s['batch']}, {s['response']} tokens, lr {s['lr']} "
                 f"(one line per seed)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save_png(fig, "async")


# ----------------------------------------------------------------------------- output


def tables(payload: dict[str, Any]) -> dict[str, str]:
    out = {}
    speed = payload.get("speed", {})
    if speed:
        rows = []
        for name, r in speed.items():
            ph = r["phases_s"]
            for arm in ARMS:
                rows.append([name, arm, ARMS[arm]["ppo"]["max_staleness"], r[f"{arm}_steps_per_s"],
                             ph[arm]["step"], ph[arm]["generation"], ph[arm]["scoring"], ph[arm]["inference"],
                             ph[arm]["training"], ph[arm]["sync"], len(r["runs"][arm]),
                             f"{r['speedup_vs_sync']:.2f}x" if arm == "async" else ""])
        out["speed"] = print_table("Async PPO vs sync (median over repeats; phase seconds are medians per step)",
                                   ["model", "arm", "max_staleness", "steps/s", "step s", "generation wait s",
                                    "scoring s", "inference s", "training s", "sync s", "runs", "speedup"], rows)
    if parity := payload.get("parity"):
        rows = [[arm, len(parity["curves"][arm]), parity["first_mean_reward"][arm], parity["final_mean_reward"][arm]]
                for arm in ARMS]
        out["parity"] = print_table(f"Learning parity (tiny, {parity['settings']['steps']} steps; median over seeds)",
                                    ["arm", "seeds", f"reward, first {FINAL_K} steps",
                                     f"reward, last {FINAL_K} steps"], rows)
    return out


def _stamp() -> dict[str, Any]:
    """When and where a part was measured (parts can run in separate invocations)."""
    m = machine_info()
    return {"date": m["date"], "git_commit": m.get("git_commit"), "cpu_model": m.get("cpu_model"), "load_after": load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="bench", choices=["bench", "child"])
    ap.add_argument("--settings", default="{}", help="child: the run's settings (JSON)")
    ap.add_argument("--json", help="child: where to write its result")
    ap.add_argument("--parts", default="speed,parity", help="speed, parity, or summary (no runs: redo the tables)")
    ap.add_argument("--sizes", default="tiny,smollm2")
    ap.add_argument("--repeats", type=int, default=2, help="sync/async pairs for tiny")
    ap.add_argument("--smollm2-repeats", type=int, default=1, help="sync/async pairs for smollm2")
    ap.add_argument("--parity-steps", type=int, default=24)
    ap.add_argument("--parity-seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1])
    ap.add_argument("--append", action="store_true", help="keep the earlier runs of async.json; add repeats")
    ap.add_argument("--quick", action="store_true", help="fewer steps, 1 repeat; results to bench/out/quick-results")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0, help="max seconds to wait for load <= max-load per run")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    if args.mode == "child":
        return child(json.loads(args.settings), args.json)
    if args.quick:
        quick_results()
        args.repeats = args.smollm2_repeats = 1
        args.parity_steps = min(args.parity_steps, 6)
    setup_env()
    previous = RESULTS / "async.json"
    payload = json.loads(previous.read_text()) if previous.is_file() and not args.quick else {}
    parts = args.parts.split(",")
    if parts != ["summary"]:  # summary: recompute the summaries and tables of the stored runs, keep their stamps
        for key in ("benchmark", "machine", "load_after", "matmul_flops_per_s_by_library"):
            payload.pop(key, None)
    if "speed" in parts:
        payload.setdefault("speed", {})
        for name in args.sizes.split(","):
            payload["speed"][name] = run_speed(name, args, payload["speed"].get(name))
            payload["speed"][name]["measured_at"] = _stamp()
    if "parity" in parts:
        payload["parity"] = run_parity(args)
        payload["parity"]["measured_at"] = _stamp()
        plot_parity(payload["parity"])
    for r in payload.get("speed", {}).values():
        add_derived(r)
    payload["tables_markdown"] = tables(payload)
    payload["args"] = vars(args)
    payload["other_processes"] = other_cpu_users()
    write_result("async", payload)


if __name__ == "__main__":
    main()
