"""PPO throughput: rlhf-dist vs TRL's PPOTrainer (trl 1.12, trl.experimental.ppo) at equal settings.

    .venv/bin/python -m bench.ppo_vs_trl [--quick] [--sizes tiny,smollm2] [--repeats N]

For each model size, A/B/C runs alternate (rlhf-dist, TRL, rlhf-dist tuned, then in reverse) in fresh
processes; each run does `warmup` unmeasured PPO steps then `steps` measured ones. Reported:
episodes/s and generated tokens/s from the median step period of each run, the median over
repeats, and the rlhf-dist / TRL ratios (median of the per-repeat ratios). "tuned" = rlhf-dist with
ppo.old_logprobs 'rollout' and 2 torch threads for the rollout engine (config options, see TUNED).

Fairness (the same in both arms): the same policy/reference, the same reward model and critic
(scalar head on the policy backbone; TRL gets *ForSequenceClassification copies with the same
weights), the same prompt token ids, rollout batch, fixed response length (eos ignored in both),
PPO epochs and mini-batches (one optimizer step per mini-batch, no gradient accumulation, grad
clip 1.0), fp32, KL k1 coef 0.05, GAE, no gradient checkpointing, the same 2 cores. Differences
that remain are listed in the JSON (`fairness`) and bench/README.md.
"""

from __future__ import annotations

import argparse
import json

from bench.arms import DEFAULTS
from bench.common import (
    quick_results,
    arch_facts, matmul_rate, median, model_dirs, other_cpu_users, ppo_step_flops, print_table, run_child, setup_env,
    spread, wait_quiet, write_result,
)

PRESETS = {
    "tiny": {"size": "tiny", "batch": 16, "response": 32, "epochs": 2, "minibatches": 2, "warmup": 1, "steps": 4},
    "smollm2": {"size": "smollm2", "batch": 8, "response": 16, "epochs": 1, "minibatches": 2, "warmup": 1, "steps": 2},
}
QUICK = {"tiny": {"steps": 2}, "smollm2": {"steps": 1}}
# A third arm: rlhf-dist with two config options suited to this run: the rollout engine's log-probs as
# the PPO old log-probs (what TRL does with its generation logits) and both cores for the engine, which
# generates while every other role waits.
TUNED = {"old_logprobs": "rollout", "role_threads": {"rollout": 2}}
LABELS = {"rlhf": "rlhf-dist", "trl": "TRL 1.12", "rlhf_tuned": "rlhf-dist, tuned"}

FAIRNESS = {
    "same": [
        "policy and reference weights (one HF dir), reward model and critic (one scalar-head dir on the policy "
        "backbone; TRL: *ForSequenceClassification built from it, score.weight = head weight, head bias is 0)",
        "prompt token ids (rlhf_dist encode_prompt, left-truncated to max_prompt), rollout batch, fp32 everywhere",
        "fixed response length: eos/stop ids ignored in both (TRL default stop_token=None; rlhf-dist "
        "rollout.sampling.ignore_eos), sampling temperature 1, top-k/top-p off",
        "PPO epochs and mini-batches: one optimizer step per mini-batch, no gradient accumulation, fused AdamW "
        "(TRL's adamw_torch_fused default; rlhf-dist's default), grad clip 1.0",
        "GAE (gamma 1, lambda 0.95), KL k1 with coef 0.05, whitened advantages; no gradient checkpointing",
        "CPU cores: TRL = one process with torch threads = all cores; rlhf-dist = a private Ray cluster with "
        "num_cpus = all cores, actors with cpus_per_actor 0.25 (1 torch thread each) time-sharing them",
    ],
    "different": [
        "rlhf-dist (default ppo.old_logprobs 'recompute') recomputes old log-probs with a policy forward; TRL takes "
        "them from the generation logits: one extra policy forward per step (counted in FLOPs). The tuned arm takes "
        "vLLM's log-probs (ppo.old_logprobs 'rollout'), like TRL",
        "the tuned arm gives the rollout engine 2 torch threads (cluster.rollout.torch_threads 2)",
        "rlhf-dist trains policy and critic in separate processes concurrently; TRL runs one forward/backward through "
        "PolicyAndValueWrapper with one optimizer",
        "rlhf-dist's reward actor scores TEXT (decode, re-tokenise with the RM tokenizer, + eos): a few tokens longer "
        "than TRL's token-id scoring; TRL treats pad-id tokens inside a response as padding",
        "rlhf-dist syncs weights to the vLLM engine after every step (a cost TRL does not have: it generates with the "
        "training model)",
    ],
}


def run_size(name: str, args) -> dict:
    settings = dict(PRESETS[name])
    if args.quick:
        settings.update(QUICK[name])
    if args.steps:
        settings["steps"] = args.steps
    dirs = model_dirs(settings["size"])  # build/convert once, before the children race for it
    arms = ["rlhf", "trl", "rlhf_tuned"]
    runs = {arm: [] for arm in arms}
    for rep in range(args.repeats):
        order = arms if rep % 2 == 0 else list(reversed(arms))
        for arm in order:
            quiet = wait_quiet(args.max_load, args.wait_quiet)
            arm_settings = {**settings, **(TUNED if arm == "rlhf_tuned" else {})}
            out = run_child(["-m", "bench.arms", arm.removesuffix("_tuned"), "--settings", json.dumps(arm_settings)],
                            timeout_s=args.timeout)
            out["quiet"] = quiet
            out["repeat"] = rep
            measured = out["periods"][settings["warmup"]:]
            out["step_s"] = median(measured)
            out["episodes_per_s"] = settings["batch"] / out["step_s"]
            out["tokens_per_s"] = settings["batch"] * settings["response"] / out["step_s"]
            runs[arm].append(out)
            print(f"[ppo_vs_trl] {name} rep {rep} {arm:11s}: step {out['step_s']:.3f}s  "
                  f"{out['episodes_per_s']:.2f} episodes/s  load {quiet['load_before'][0]}", flush=True)
    ratios = [r["episodes_per_s"] / t["episodes_per_s"] for r, t in zip(runs["rlhf"], runs["trl"])]
    ratios_tuned = [r["episodes_per_s"] / t["episodes_per_s"] for r, t in zip(runs["rlhf_tuned"], runs["trl"])]
    facts = arch_facts(dirs["policy"])
    prompt_width = {**DEFAULTS, **settings}["max_prompt"]
    summary = {}
    for arm, rows in runs.items():
        # TRL takes its old log-probs from the generation logits; rlhf-dist per ppo.old_logprobs
        recompute = arm != "trl" and rows[0]["settings"]["old_logprobs"] == "recompute"
        flops = ppo_step_flops(facts, facts, settings["batch"], prompt_width, settings["response"],
                               settings["epochs"], recompute_old_logprobs=recompute)
        summary[arm] = {
            "episodes_per_s": spread([r["episodes_per_s"] for r in rows]),
            "tokens_per_s": spread([r["tokens_per_s"] for r in rows]),
            "step_s": spread([r["step_s"] for r in rows]),
            "startup_s": spread([r["startup_s"] for r in rows]),
            "flops_per_step": flops["total"],
        }
    summary["ratio_episodes_per_s"] = spread(ratios)
    summary["ratio_tuned_episodes_per_s"] = spread(ratios_tuned)
    summary["params"] = facts["params_total"]
    return {"settings": settings, "runs": runs, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,smollm2")
    ap.add_argument("--repeats", type=int, default=None, help="A/B pairs per size (default 3, quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per run (default per size)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, fewer steps (a smoke run, ~4 min)")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0, help="max seconds to wait for load <= max-load per run")
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    if args.quick:
        quick_results()
    args.repeats = args.repeats or (1 if args.quick else 3)
    threads = setup_env()
    rate = matmul_rate(threads)
    results = {name: run_size(name, args) for name in args.sizes.split(",")}
    rows = []
    for name, res in results.items():
        s = res["summary"]
        for arm in res["runs"]:
            a, label = s[arm], LABELS[arm]
            ratio = {"rlhf": "ratio_episodes_per_s", "rlhf_tuned": "ratio_tuned_episodes_per_s"}.get(arm)
            floor = a["flops_per_step"] / rate
            rows.append([name, f"{s['params'] / 1e6:.2f}M", label, a["episodes_per_s"]["median"],
                         a["tokens_per_s"]["median"], a["step_s"]["median"],
                         f"{a['step_s']['min']:.3g}-{a['step_s']['max']:.3g}",
                         f"{100 * floor / a['step_s']['median']:.1f}%",
                         s[ratio]["median"] if ratio else ""])
    md = print_table("PPO throughput, rlhf-dist vs TRL (median over repeats)",
                     ["model", "params", "framework", "episodes/s", "gen tokens/s", "step s", "step s range",
                      "floor/step", "ratio rlhf/TRL"], rows)
    write_result("ppo_vs_trl", {
        "args": vars(args), "threads": threads, "matmul_flops_per_s": rate, "fairness": FAIRNESS, "tuned": TUNED,
        "other_processes": other_cpu_users(), "results": results, "table_markdown": md,
    })


if __name__ == "__main__":
    main()
