"""Scaling of rlhf-dist PPO on one machine: step time vs rollout batch, rollout engines, policy ranks.

    .venv/bin/python -m bench.scaling [--quick] [--size tiny] [--batches 8,16,32,64] [--at 32]

Every point is a fresh process with a private Ray cluster (the ppo_vs_trl settings otherwise:
fixed-length responses, GAE, reward model actor, 2 mini-batches). The floor of a step is its
model FLOPs (generation, reward, reference/policy/critic forwards, policy and critic training;
bench.common.ppo_step_flops) over the machine's measured fp32 matmul rate with all cores:
no run can beat it; floor/step says how close a run gets.
"""

from __future__ import annotations

import argparse
import json

from bench.common import (
    quick_results,
    arch_facts, matmul_rate, model_dirs, other_cpu_users, ppo_step_flops, print_table, run_child, save_png,
    setup_env, wait_quiet, write_result,
)
from bench.arms import DEFAULTS
from bench.phases import breakdown
from bench.ppo_vs_trl import PRESETS


def _threads(s: dict) -> str:
    """torch threads per actor (max(1, int(cpus_per_actor))), with the per-role torch_threads overrides."""
    t = str(max(1, int(s["cpus_per_actor"])))
    extra = ",".join(f"{r} {n}" for r, n in s.get("role_threads", {}).items() if n is not None)
    return f"{t} ({extra})" if extra else t


def point(base: dict, args, rate: float, facts: dict, **over) -> dict:
    settings = {**base, **over}
    quiet = wait_quiet(args.max_load, args.wait_quiet)
    run = run_child(["-m", "bench.arms", "rlhf", "--settings", json.dumps(settings)], timeout_s=args.timeout)
    br = breakdown(run, settings["warmup"])
    step = br["median_s"]["period"]
    flops = ppo_step_flops(facts, facts, settings["batch"], settings["max_prompt"], settings["response"],
                           settings["epochs"], recompute_old_logprobs=settings["old_logprobs"] == "recompute")
    floor = flops["total"] / rate
    label = (f"B={settings['batch']} engines={settings['engines']} policy_ranks={settings['policy_ranks']} "
             f"critic_ranks={settings['critic_ranks']} zero={settings['zero_stage']} threads={_threads(settings)}")
    print(f"[scaling] {label}: step {step:.3f}s floor {floor:.4f}s ({100 * floor / step:.1f}%)", flush=True)
    return {"label": label, "settings": settings, "quiet": quiet, "step_s": step,
            "episodes_per_s": settings["batch"] / step, "flops": flops, "floor_s": floor,
            "floor_fraction": floor / step, "phases_median_s": br["median_s"], "share": br["share"],
            "periods": run["periods"], "startup_s": run["startup_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batches", default=None, help="rollout batch sweep (default 8,16,32,64; quick 8,32)")
    ap.add_argument("--at", type=int, default=32, help="batch for the engines / ranks points")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per point (default 3, quick 2)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    if args.quick:
        quick_results()
    batches = [int(b) for b in (args.batches or ("8,32" if args.quick else "8,16,32,64")).split(",")]
    threads = setup_env()
    rate = matmul_rate(threads)
    dirs = model_dirs(args.size)
    facts = arch_facts(dirs["policy"])
    base = {**DEFAULTS, **PRESETS.get(args.size, {**PRESETS["tiny"], "size": args.size}),
            "steps": args.steps or (2 if args.quick else 3)}
    by_batch = [point(base, args, rate, facts, batch=b) for b in batches]
    at = (next((p for p in by_batch if p["settings"]["batch"] == args.at), None)
          or point(base, args, rate, facts, batch=args.at))
    variants = [
        {"engines": 2},
        {"policy_ranks": 2, "zero_stage": 2},
        {"engines": 2, "policy_ranks": 2, "critic_ranks": 2, "zero_stage": 2},
        {"zero_stage": 2},  # ZeRO-2 on single ranks: its cost
        {"role_threads": {"rollout": 2}},  # 2 torch threads for the rollout engine (cluster.rollout.torch_threads)
        {"cpus_per_actor": 2.0, "local_cpus": 12},  # 2 torch threads for every actor (12 logical CPUs)
    ]
    layouts = [at] + [point(base, args, rate, facts, batch=args.at, **v) for v in variants[: 2 if args.quick else None]]
    cols = ["B", "engines", "policy ranks", "critic ranks", "ZeRO", "threads/actor", "step s", "episodes/s", "floor s",
            "floor/step", "generation", "training", "sync", "driver overhead"]

    def row(p):
        s, sh = p["settings"], p["share"]
        return [s["batch"], s["engines"], s["policy_ranks"], s["critic_ranks"], s["zero_stage"], _threads(s),
                p["step_s"], p["episodes_per_s"], p["floor_s"], f"{100 * p['floor_fraction']:.1f}%",
                f"{100 * sh['generation']:.0f}%", f"{100 * sh['training']:.0f}%", f"{100 * sh['sync']:.0f}%",
                f"{100 * sh['driver_overhead']:.0f}%"]

    md_batch = print_table(f"Step time vs rollout batch ({args.size}, {facts['params_total'] / 1e6:.2f}M params)", cols,
                           [row(p) for p in by_batch])
    md_layout = print_table(f"Step time vs rollout engines / policy ranks (B={args.at})", cols,
                            [row(p) for p in layouts])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bs = [p["settings"]["batch"] for p in by_batch]
    ax1.plot(bs, [p["step_s"] for p in by_batch], marker="o", label="measured step")
    ax1.plot(bs, [p["floor_s"] for p in by_batch], marker=".", linestyle="--", label="FLOP floor")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("rollout batch (episodes / step)")
    ax1.set_ylabel("seconds per PPO step")
    ax1.set_title(f"{args.size}: step time vs batch")
    ax1.grid(alpha=0.3)
    ax1.legend()
    names = [f"e{p['settings']['engines']}p{p['settings']['policy_ranks']}c{p['settings']['critic_ranks']}"
             f"z{p['settings']['zero_stage']}t{_threads(p['settings']).replace(' (rollout ', 'r').rstrip(')')}"
             for p in layouts]
    ax2.bar(names, [p["step_s"] for p in layouts], label="measured step")
    ax2.bar(names, [p["floor_s"] for p in layouts], label="FLOP floor")
    ax2.set_ylabel("seconds per PPO step")
    ax2.set_title(f"B={args.at}: engines e, policy/critic ranks p/c, ZeRO z, threads t", fontsize=9)
    ax2.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax2.legend()
    save_png(fig, "scaling")
    write_result("scaling", {"args": vars(args), "threads": threads, "matmul_flops_per_s": rate, "model": facts,
                             "other_processes": other_cpu_users(), "by_batch": by_batch, "layouts": layouts,
                             "tables_markdown": {"batch": md_batch, "layout": md_layout}})


if __name__ == "__main__":
    main()
