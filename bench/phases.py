"""Phase breakdown of rlhf-dist PPO steps, and weight-sync time vs model size.

    .venv/bin/python -m bench.phases [--quick] [--sizes tiny,smollm2]
        [--sync-sizes tiny,tiny256,tiny512,tiny1024,smollm2]

Part 1: a PPO run per model (the ppo_vs_trl settings, fresh process, private Ray cluster); the
driver's per-step timings (`time/*` metrics) of the measured steps, median seconds and share of
the step period. Step period = time between consecutive metric records, so it also holds what
the driver does between two `ppo_step` calls. Driver overhead = period minus generation,
scoring, inference, training and sync (it includes the driver's advantage math, which is also
shown alone). `policy_train` / `critic_train` are each group's own training seconds (slowest
rank; they run concurrently, `training` is the wall time of both).

Part 2: the real sync path (`roles.weight_sync.sync()`, backends/sync: one bucket of whole layers at a
time, policy rank 0 gathers it and puts it in the object store, every rollout engine fetches it and
reloads it in place) timed on idle roles for models of growing size, with its two halves, bucket by
bucket without overlap: gather+put (`PolicyGroup.weight_bucket`) and fetch+reload
(`RolloutGroup.update_weights`). Bytes are what is sent (a tied lm_head is not).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import (
    quick_results,
    SCRATCH, arch_facts, median, model_dirs, other_cpu_users, print_table, run_child, save_png, setup_env, wait_quiet,
    write_result,
)
from bench.ppo_vs_trl import PRESETS, QUICK

PHASES = ["generation", "scoring", "inference", "advantages", "policy_train", "critic_train", "training", "sync"]


def breakdown(run: dict, warmup: int) -> dict:
    hist = run["history"][warmup:]
    periods = run["periods"][warmup:]
    rows = []
    for h, period in zip(hist, periods):
        main = sum(h.get(f"time/{k}", 0.0) for k in ("generation", "scoring", "inference", "training", "sync"))
        rows.append({**{k: h.get(f"time/{k}", 0.0) for k in PHASES}, "step": h["time/step"], "period": period,
                     "in_step_overhead": h["time/overhead"], "between_steps": period - h["time/step"],
                     "driver_overhead": period - main, "sync_bytes": h.get("sync/bytes", 0.0)})
    keys = rows[0].keys()
    med = {k: median([r[k] for r in rows]) for k in keys}
    share = {k: med[k] / med["period"] for k in keys if k not in ("sync_bytes",)}
    return {"per_step": rows, "median_s": med, "share": share}


def sync_child(size: str, repeats: int) -> dict:
    """Build idle roles (policy, reference, one vLLM engine) and time the weight sync."""
    import ray

    from bench.arms import DEFAULTS, rlhf_config
    from bench.common import start_ray
    from rlhf_dist.config import with_overrides
    from rlhf_dist.driver.actors import ModelDirs, build_roles

    dirs = model_dirs(size)
    s = {**DEFAULTS, "size": size, "batch": 8, "minibatches": 1}
    cfg = rlhf_config(s, dirs, SCRATCH / "runs" / f"sync-{size}")
    # No critic / reward actors needed for a sync: REINFORCE++ with a function reward.
    cfg = with_overrides(cfg, {"ppo.advantage": "reinforce_pp", "ppo.rewards": [
        {"kind": "function", "function": "rlhf_dist.eval.rules:lowercase_fraction_reward"}]})
    start_ray(cfg.cluster.local_num_cpus)
    roles = build_roles(cfg, ModelDirs(policy=dirs["policy"], reward=None, critic_init=dirs["policy"]), total_updates=1)
    try:
        roles.weight_sync.sync()  # warm-up (also makes the bucket plan)
        total, gather, transfer, nbytes = [], [], [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            nbytes = roles.weight_sync.sync()
            total.append(time.perf_counter() - started)
            # the same calls, bucket by bucket without overlap, timed in halves
            gather_s = transfer_s = 0.0
            for i in range(len(roles.weight_sync.plan or [])):
                started = time.perf_counter()
                ref, gathered = roles.policy.weight_bucket(i)
                gathered.result()
                mid = time.perf_counter()
                roles.rollout.update_weights(ref).result()
                gather_s, transfer_s = gather_s + mid - started, transfer_s + time.perf_counter() - mid
            gather.append(gather_s)
            transfer.append(transfer_s)
    finally:
        roles.shutdown()
        ray.shutdown()
    facts = arch_facts(dirs["policy"])
    return {"size": size, "params": facts["params_total"], "bytes": nbytes, "sync_s": total, "gather_s": gather,
            "transfer_reload_s": transfer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="PPO runs (default tiny,smollm2; quick: tiny)")
    ap.add_argument("--sync-sizes", default=None,
                    help="sync sweep (default tiny,tiny256,tiny512,tiny1024,smollm2; quick: tiny,tiny512,smollm2)")
    ap.add_argument("--sync-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--sync-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        quick_results()
    if args.sync_child:
        setup_env()
        Path(args.json).write_text(json.dumps(sync_child(args.sync_child, args.sync_repeats)))
        return
    sizes = (args.sizes or ("tiny" if args.quick else "tiny,smollm2")).split(",")
    default_sync = "tiny,tiny512,smollm2" if args.quick else "tiny,tiny256,tiny512,tiny1024,smollm2"
    sync_sizes = (args.sync_sizes or default_sync).split(",")
    setup_env()
    runs, tables = {}, {}
    for size in sizes:
        settings = dict(PRESETS.get(size, {**PRESETS["tiny"], "size": size}))
        if args.quick:
            settings.update(QUICK.get(size, {}))
        settings["steps"] = max(settings["steps"], 2)
        model_dirs(size)
        quiet = wait_quiet(args.max_load, args.wait_quiet)
        run = run_child(["-m", "bench.arms", "rlhf", "--settings", json.dumps(settings)], timeout_s=args.timeout)
        runs[size] = {"settings": settings, "quiet": quiet, "run": run, **breakdown(run, settings["warmup"])}
    rows = []
    order = ["generation", "scoring", "inference", "policy_train", "critic_train", "training", "sync", "advantages",
             "in_step_overhead", "between_steps", "driver_overhead", "period"]
    for k in order:
        row = [k]
        for size in sizes:
            r = runs[size]
            row += [r["median_s"][k], f"{100 * r['share'][k]:.1f}%"]
        rows.append(row)
    cols = ["phase"] + [c for s in sizes for c in (f"{s} s", f"{s} share")]
    tables["phases"] = print_table("PPO step phases (rlhf-dist, median of measured steps)", cols, rows)

    sync = {}
    for size in sync_sizes:
        model_dirs(size)
        wait_quiet(args.max_load, args.wait_quiet)
        sync[size] = run_child(["-m", "bench.phases", "--sync-child", size, "--sync-repeats", str(args.sync_repeats)],
                               timeout_s=args.timeout)
    srows = []
    for size, r in sync.items():
        t = median(r["sync_s"])
        srows.append([size, f"{r['params'] / 1e6:.2f}M", f"{r['bytes'] / 2**20:.1f}", t,
                      median(r["gather_s"]), median(r["transfer_reload_s"]), f"{r['bytes'] / t / 2**30:.2f}"])
    tables["sync"] = print_table("Weight sync (policy -> 1 vLLM engine), median", [
        "model", "params", "MiB sent (fp32)", "sync s", "gather+bucket s", "transfer+reload s", "GiB/s"], srows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = ["generation", "scoring", "inference", "training", "sync", "driver_overhead"]
    bottom = [0.0] * len(sizes)
    for k in labels:
        vals = [100 * runs[s]["share"][k] for s in sizes]
        ax1.bar(sizes, vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax1.set_ylabel("% of step period")
    ax1.set_title("PPO step phases (rlhf-dist)")
    ax1.legend(fontsize=8)
    mib = [sync[s]["bytes"] / 2**20 for s in sync]
    ax2.plot(mib, [median(sync[s]["sync_s"]) for s in sync], marker="o", label="sync total")
    ax2.plot(mib, [median(sync[s]["gather_s"]) for s in sync], marker=".", label="gather + bucket")
    ax2.plot(mib, [median(sync[s]["transfer_reload_s"]) for s in sync], marker=".", label="transfer + reload")
    for s, x in zip(sync, mib):
        ax2.annotate(s, (x, median(sync[s]["sync_s"])), fontsize=7)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("weights sent (MiB, fp32)")
    ax2.set_ylabel("seconds")
    ax2.set_title("weight sync vs model size")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    save_png(fig, "phases")
    write_result("phases", {"args": vars(args), "other_processes": other_cpu_users(), "runs": runs, "sync": sync,
                            "tables_markdown": tables})


if __name__ == "__main__":
    main()
