"""Where one PPO step's time goes: every role in ONE process (no Ray), each phase under torch's profiler.

    .venv/bin/python -m bench.profile [--quick] [--size smollm2] [--py-spy]

The role classes the actors host (RolloutWorker, RewardWorker, ReferenceWorker, PolicyWorker,
CriticWorker) are built directly, with the actors' thread setting (1 torch thread each), a
world-size-1 gloo group and the ppo_vs_trl settings, and one PPO step is run phase by phase:
generate, score, reference / policy / critic forwards, advantages, policy and critic updates,
weight sync (gather + bucket, what the object store does to the wire buckets, vLLM reload). Fixed-
length responses come from the config (`rollout.sampling.ignore_eos`); `--patches` applies the
what-if patches of bench/hooks.py (logits_to_keep).
Each phase reports its seconds and the top torch ops by self CPU time; the model FLOPs of the
phase over the measured 1-thread matmul rate give its floor. With --py-spy the same run is
sampled by py-spy (native frames) and the hottest Python/native functions are listed.
Results: bench/results/profile_<size>.json. --quick (what `make bench BENCH_ARGS=--quick` runs): the tiny
model, with the torch profiler and py-spy both, results to bench/out/quick-results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import (
    SCRATCH,
    arch_facts,
    forward_flops,
    matmul_rate,
    model_dirs,
    print_table,
    quick_results,
    setup_env,
    wait_quiet,
    write_result,
)


def build_workers(settings: dict):
    from bench.arms import rlhf_config
    from bench.hooks import apply_whatif
    from rlhf_dist.utils import free_port
    from rlhf_dist.workers.inference import ReferenceWorker, RewardWorker, RolloutWorker
    from rlhf_dist.workers.trainers import CriticWorker, PolicyWorker

    apply_whatif(settings.get("patches", []))
    # Each worker points fds 1/2 at its role log (workers/base.py); the bench's own lines stay on the console.
    console = os.fdopen(os.dup(1), "w", buffering=1)
    dirs = model_dirs(settings["size"])
    cfg = rlhf_config(settings, dirs, SCRATCH / "runs" / "profile")
    cfg_dict = cfg.model_dump(mode="json")
    policy = PolicyWorker(cfg_dict, "policy", 0, 1)
    policy.init_distributed("127.0.0.1", free_port())  # one gloo group, shared by both trainers
    critic = CriticWorker(cfg_dict, "critic", 0, 1)
    ref = ReferenceWorker(cfg_dict, "reference", 0, 1)
    reward = RewardWorker(cfg_dict, "reward", 0, 1)
    rollout = RolloutWorker(cfg_dict, "rollout", 0, 1)
    policy.init_model(str(dirs["policy"]), 10)
    critic.init_model(str(dirs["reward"]), 10)
    ref.init_model(str(dirs["policy"]))
    reward.init_model(str(dirs["reward"]))
    rollout.init_model(str(dirs["policy"]))
    sys.stdout = console
    return cfg, dirs, {"policy": policy, "critic": critic, "reference": ref, "reward": reward, "rollout": rollout}


def object_store_round_trip(bucket: list) -> list:
    """What Ray does to a returned wire bucket [(name, ndarray, dtype name)]: its cloudpickle at
    protocol 5 with the arrays as out-of-band buffers, ONE copy of each buffer into shared memory,
    and a zero-copy load on the receiving side (the arrays are views of that memory)."""
    from ray import cloudpickle

    buffers: list = []
    data = cloudpickle.dumps(bucket, protocol=5, buffer_callback=buffers.append)
    return cloudpickle.loads(data, buffers=[bytearray(b.raw()) for b in buffers])


def top_ops(prof, n: int = 8) -> list[dict]:
    rows = []
    for e in prof.key_averages():
        rows.append({"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count})
    rows.sort(key=lambda r: -r["self_s"])
    return rows[:n]


def run_step(settings: dict, profile: bool) -> dict:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from bench.arms import prompt_texts
    from rlhf_dist.algo import RunningMeanStd
    from rlhf_dist.data.experience import InferenceOutputs, RolloutBatch, pack_samples
    from rlhf_dist.data.tokenize import encode_prompt
    from rlhf_dist.driver.experience import make_experience
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.workers.tensor_wire import tensors_from_wire, tensors_to_wire

    cfg, dirs, w = build_workers(settings)
    tokenizer = load_tokenizer(dirs["policy"])
    texts = prompt_texts()[: settings["batch"]]
    prompt_ids = [encode_prompt(tokenizer, t, settings["max_prompt"]) for t in texts]
    phases: dict[str, dict] = {}

    def timed(name: str, fn):
        fn()  # warm-up run of the phase (first-call allocations, kernel selection)
        if profile:
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                started = time.perf_counter()
                out = fn()
                seconds = time.perf_counter() - started
            ops = top_ops(prof)
        else:
            started = time.perf_counter()
            out = fn()
            seconds, ops = time.perf_counter() - started, []
        phases[name] = {"seconds": seconds, "top_ops": ops}
        print(f"[profile] {name:22s} {seconds:8.3f} s", flush=True)
        return out

    sampling = cfg.rollout.sampling  # ignore_eos=True (bench.arms: fixed_length): every response is full length
    assert sampling.ignore_eos
    samples = timed("generation", lambda: w["rollout"].generate(prompt_ids, seed=1))
    flat = [s for group in samples for s in group]
    lengths = {len(s.response_ids) for s in flat}
    if lengths != {sampling.max_new_tokens}:
        raise RuntimeError(f"response lengths {sorted(lengths)} != fixed length {sampling.max_new_tokens}")
    inputs, lps = pack_samples(flat, tokenizer.pad_token_id)
    responses = [tokenizer.decode(s.response_ids, skip_special_tokens=True) for s in flat]
    batch = RolloutBatch(inputs, lps, texts, responses)
    scores = timed("scoring (reward model)", lambda: w["reward"].score(texts, responses))
    ref_lp = timed("reference logprobs", lambda: w["reference"].logprobs(inputs))
    old_lp = timed("policy logprobs", lambda: w["policy"].logprobs(inputs))
    values = timed("critic values", lambda: w["critic"].values(inputs))
    exp, _ = make_experience(cfg.ppo, batch, InferenceOutputs(old_lp, ref_lp, values),
                             torch.tensor(scores), 0.05, RunningMeanStd(), 1)
    timed("policy train", lambda: w["policy"].train_ppo(exp, step=1))
    timed("critic train", lambda: w["critic"].train_ppo(exp, step=1))
    plan = timed("sync: bucket plan", lambda: w["policy"].weight_sync_plan(cfg.rollout.sync_bucket_mb))

    def gather_and_serialise() -> list:  # PolicyWorker.weight_bucket without Ray: gather, wire format, store trip
        out = []
        for i in range(len(plan)):
            with w["policy"]._bucket_tensors(i) as tensors:
                out.append(object_store_round_trip(tensors_to_wire(tensors)))
        return out

    received = timed("sync: gather+serialise buckets", gather_and_serialise)

    def reload():  # RolloutWorker.update_weights without the store: wire -> torch views -> vLLM weight loaders
        for b in received:
            w["rollout"].engine.update_weights(tensors_from_wire(b))

    timed("sync: vLLM reload", reload)
    w["rollout"].engine.shutdown()
    facts = arch_facts(dirs["policy"])
    seq = inputs.sequences.shape[1]
    return {"phases": phases, "sync_bytes": sum(bucket.nbytes for bucket in plan), "facts": facts, "seq_len": seq,
            "flops": {"forward_lm": forward_flops(facts, settings["batch"] * seq, seq // 2),
                      "forward_value": forward_flops(facts, settings["batch"] * seq, seq // 2, lm_head=False)}}


def py_spy_summary(raw: Path, n: int = 15) -> dict:
    """Collapsed stacks -> the hottest leaf frames (self) and the hottest frames anywhere (inclusive).

    Only samples inside a timed phase count (model loading, warm-ups of the engines and shutdown
    are left out): a stack must pass through `timed` in bench/profile.py.
    """
    self_c, incl_c, total, all_samples = Counter(), Counter(), 0, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        all_samples += c
        frames = stack.split(";")
        if not any(".timed (" in f and "profile.py" in f for f in frames):
            continue
        total += c
        self_c[frames[-1]] += c
        for f in set(frames):
            incl_c[f] += c
    total = max(total, 1)
    return {"samples": total, "samples_whole_process": all_samples,
            "self": [{"frame": f, "share": c / total} for f, c in self_c.most_common(n)],
            "inclusive": [{"frame": f, "share": c / total} for f, c in incl_c.most_common(3 * n)]}


def main() -> None:
    from bench.arms import DEFAULTS
    from bench.ppo_vs_trl import PRESETS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default=None, help="model size (default smollm2; quick: tiny)")
    ap.add_argument("--py-spy", action="store_true", help="also sample the run with py-spy (native frames)")
    ap.add_argument("--quick", action="store_true", help="smoke run of every path: tiny, torch profiler and py-spy; "
                    "results to bench/out/quick-results")
    ap.add_argument("--no-torch-profiler", action="store_true")
    ap.add_argument("--patches", default="", help="what-if engine patches (bench/hooks.py): logits_to_keep")
    ap.add_argument("--zero-stage", type=int, default=None)
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.size = args.size or ("tiny" if args.quick else "smollm2")
    if args.quick:
        quick_results()
        args.py_spy = True
    settings = {**DEFAULTS, **PRESETS.get(args.size, {**PRESETS["tiny"], "size": args.size}),
                "patches": [p for p in args.patches.split(",") if p]}
    if args.zero_stage is not None:
        settings["zero_stage"] = args.zero_stage
    tag = args.size + "".join(f"_{p}" for p in settings["patches"]) + (
        f"_zero{args.zero_stage}" if args.zero_stage is not None else "")
    if args.json:  # child (under py-spy): plain timings only
        setup_env(1)
        Path(args.json).write_text(json.dumps(run_step(settings, profile=False), default=str))
        return
    setup_env(1)  # the actors' setting: one torch thread per role
    rate1 = matmul_rate(1)
    quiet = wait_quiet(args.max_load, args.wait_quiet)
    result = run_step(settings, profile=not args.no_torch_profiler)
    spy = None
    if args.py_spy:
        raw = SCRATCH / f"profile_{args.size}.pyspy.txt"
        child_json = SCRATCH / f"profile_{args.size}.child.json"
        cmd = ["py-spy", "record", "--native", "-r", "40", "--format", "raw", "-o", str(raw), "--",
               sys.executable, "-m", "bench.profile", "--size", args.size, "--json", str(child_json),
               "--patches", ",".join(settings["patches"])] + (
                   ["--zero-stage", str(args.zero_stage)] if args.zero_stage is not None else [])
        subprocess.run([str(Path(sys.executable).parent / cmd[0]), *cmd[1:]], check=True, env=os.environ.copy(),
                       capture_output=True)
        spy = py_spy_summary(raw)
    rows = []
    fl = result["flops"]
    floors = {"reference logprobs": fl["forward_lm"], "policy logprobs": fl["forward_lm"],
              "critic values": fl["forward_value"], "scoring (reward model)": fl["forward_value"],
              "policy train": 3 * fl["forward_lm"] * settings["epochs"],
              "critic train": 3 * fl["forward_value"] * settings["epochs"]}
    for name, p in result["phases"].items():
        floor = floors.get(name)
        top = ", ".join(f"{o['op']} {o['self_s']:.2f}s" for o in p["top_ops"][:3])
        rows.append([name, p["seconds"], f"{100 * floor / rate1 / p['seconds']:.0f}%" if floor else "", top])
    md = print_table(f"One PPO step, roles in-process, 1 thread ({tag})",
                     ["phase", "seconds", "floor/phase (1 thread)", "top torch ops (self CPU)"], rows)
    if spy:
        print_table("py-spy: hottest frames (self)", ["frame", "share"],
                    [[s["frame"][:110], f"{100 * s['share']:.1f}%"] for s in spy["self"]])
    write_result(f"profile_{tag}", {"settings": settings, "matmul_flops_per_s_1thread": rate1, "quiet": quiet,
                                          **result, "py_spy": spy, "table_markdown": md})


if __name__ == "__main__":
    main()
