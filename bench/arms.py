"""One PPO run, in its own process, by rlhf-dist or by TRL; prints nothing useful, writes JSON.

    python -m bench.arms rlhf --settings '{"size": "tiny", ...}' --json out.json
    python -m bench.arms trl  --settings '{"size": "tiny", ...}' --json out.json

Both arms get the same models (policy = reference start; reward model and critic = the same
scalar-head model on the policy's backbone), the same prompt token ids, the same rollout batch,
fixed response length, PPO epochs and mini-batches, fp32, and the machine's cores. The benchmarks
(ppo_vs_trl, phases, scaling) start these processes; running a fresh process per arm keeps
thread pools, Ray clusters and allocator state from leaking between A and B.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.common import SCRATCH, device, load, model_dirs, setup_env

DEFAULTS: dict[str, Any] = {
    "size": "tiny",
    "batch": 16,  # prompts (= episodes) per PPO step, 1 sample each
    "response": 32,  # generated tokens per episode (fixed length)
    "max_prompt": 48,  # prompt tokens (left-truncated)
    "epochs": 2,  # PPO epochs per step
    "minibatches": 2,  # optimizer steps per epoch (each on batch / minibatches sequences)
    "steps": 3,  # measured steps
    "warmup": 1,  # steps run first and not measured
    "threads": None,  # TRL: torch threads (None = all cores)
    "seed": 0,
    "lr": 1e-6,
    # rlhf-dist layout
    "backend": "vllm",
    "engines": 1,
    "policy_ranks": 1,
    "critic_ranks": 1,
    "zero_stage": 0,  # one rank per trainer by default: ZeRO partitions nothing there (and costs, see README)
    "cpus_per_actor": 0.25,  # Ray CPUs per actor; torch threads per actor = max(1, int(this)) unless role_threads
    "local_cpus": None,  # Ray logical CPUs (None = cores)
    "role_threads": {},  # per-role cluster.<role>.torch_threads, e.g. {"rollout": 2}
    "old_logprobs": "recompute",  # ppo.old_logprobs
    "fixed_length": True,  # rollout.sampling.ignore_eos (TRL: stop_token=None)
    "patches": [],  # bench/hooks.py what-if engine patches (rlhf-dist arm only)
}


def prompts_file() -> Path:
    """The shared prompt set (built-in demo prompts), written once."""
    from rlhf_dist.data.demo import demo_prompts

    path = SCRATCH / "prompts.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"prompt": p.prompt}) + "\n" for p in demo_prompts(256, seed=0)))
        tmp.replace(path)
    return path


def prompt_texts() -> list[str]:
    return [json.loads(line)["prompt"] for line in prompts_file().read_text().splitlines()]


# ----------------------------------------------------------------------------- rlhf-dist


def rlhf_config(s: dict[str, Any], dirs: dict[str, Path], out_dir: Path):
    from rlhf_dist.config import build_config

    mb = s["batch"] // s["minibatches"]
    if mb % s["policy_ranks"] or mb % s["critic_ranks"]:
        raise ValueError(f"mini-batch {mb} must split evenly over {s['policy_ranks']} policy / "
                         f"{s['critic_ranks']} critic ranks")

    def train(ranks: int) -> dict[str, Any]:
        return {"backend": "deepspeed", "zero_stage": s["zero_stage"], "micro_batch_size": mb // ranks,
                "global_batch_size": mb, "lr": s["lr"], "grad_clip": 1.0}

    dev = device()

    def res(role: str, n: int) -> dict[str, Any]:
        out = {"num_actors": n, "cpus_per_actor": s["cpus_per_actor"], "torch_threads": s["role_threads"].get(role)}
        if dev == "cuda":  # every role shares the GPU(s): colocated bundles, a fifth of a GPU per actor
            out["gpus_per_actor"] = 0.2
        return out

    data = {
        "run": {"name": "bench", "output_dir": str(out_dir), "seed": s["seed"]},
        "policy": {"path": str(dirs["policy"]), "dtype": "float32"},
        "reward_model": {"path": str(dirs["reward"]), "dtype": "float32", "pooling": "last"},
        "critic": {"init_from": "reward"},
        "data": {"prompts_path": str(prompts_file()), "max_prompt_length": s["max_prompt"],
                 "max_length": s["max_prompt"] + s["response"] + 16},
        "ppo": {
            "steps": s["warmup"] + s["steps"] + 1,  # stop_after ends one short: no final checkpoint/export
            "rollout_batch_size": s["batch"], "ppo_epochs": s["epochs"], "advantage": "gae",
            "rewards": [{"kind": "model"}], "kl": {"coef": 0.05, "estimator": "k1"}, "reward_clip": None,
            "old_logprobs": s["old_logprobs"],
            "policy_train": train(s["policy_ranks"]), "critic_train": train(s["critic_ranks"]),
        },
        "rollout": {"backend": s["backend"], "num_engines": s["engines"], "kv_cache_gib": 1,
                    "gpu_memory_utilization": 0.25,
                    "sampling": {"max_new_tokens": s["response"], "temperature": 1.0, "ignore_eos": s["fixed_length"]}},
        "cluster": {"device": dev, "colocate": dev == "cuda", "local_num_cpus": s["local_cpus"] or os.cpu_count(),
                    "policy": res("policy", s["policy_ranks"]), "critic": res("critic", s["critic_ranks"]),
                    "reference": res("reference", 1), "reward": res("reward", 1),
                    "rollout": _engine_res(res("rollout", s["engines"]))},
        "tracking": {"progress": False, "tensorboard": False, "jsonl": True},
        "checkpoint": {"every_steps": 0},
    }
    return build_config(data, source="bench")


def _engine_res(res: dict[str, Any]) -> dict[str, Any]:
    """cluster.rollout is one engine's actor (how many: rollout.num_engines), it has no num_actors."""
    return {k: v for k, v in res.items() if k != "num_actors"}


def run_rlhf(s: dict[str, Any]) -> dict[str, Any]:
    import logging
    import shutil

    import ray

    from bench.common import start_ray
    from rlhf_dist.stages.ppo import run_ppo_stage

    logging.disable(logging.WARNING)
    dirs = model_dirs(s["size"])
    out_dir = SCRATCH / "runs" / f"rlhf-{s['size']}-{os.getpid()}"
    shutil.rmtree(out_dir, ignore_errors=True)
    cfg = rlhf_config(s, dirs, out_dir)
    t0 = time.perf_counter()
    start_ray(cfg.cluster.local_num_cpus, patches=s["patches"])
    ray_start = time.perf_counter() - t0
    wall0 = time.time()
    try:
        result = run_ppo_stage(cfg, policy_dir=dirs["policy"], reward_dir=dirs["reward"],
                               stop_after=s["warmup"] + s["steps"])
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r.get("phase") == "ppo"]
    # Step period = time between consecutive metric records: ppo_step plus what the driver does between steps.
    stamps = [r["time"] for r in records]
    periods = [records[0]["time/step"]] + [b - a for a, b in zip(stamps, stamps[1:])]
    startup = (stamps[0] - wall0) - records[0]["time/step"] + ray_start
    history = [{k: v for k, v in r.items() if k.startswith(("time/", "sync/", "response/", "reward/score_raw"))}
               for r in result.history]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"framework": "rlhf-dist", "periods": periods, "history": history, "startup_s": startup, "wall_s": wall}


# ----------------------------------------------------------------------------- TRL


def trl_models(dirs: dict[str, Path]):
    """Policy, reference, reward and value models for TRL, equal to rlhf-dist's.

    TRL's reward/value models are *ForSequenceClassification-style (`.score` on the backbone's last
    hidden state). A reward dir saved since issue #12 is such a dir; an older one (backbone +
    score_head.safetensors) gets its head weight copied in (its bias is zero; `score` has none).
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhf_dist.models.scalar_head import HEAD_WEIGHTS

    def lm():
        return AutoModelForCausalLM.from_pretrained(dirs["policy"], dtype=torch.float32)

    old_head = dirs["reward"] / HEAD_WEIGHTS
    head = load_file(old_head) if old_head.is_file() else None

    def scorer():
        model = AutoModelForSequenceClassification.from_pretrained(dirs["reward"], num_labels=1, dtype=torch.float32)
        if head is not None:
            with torch.no_grad():
                model.score.weight.copy_(head["weight"])
        return model

    return lm(), lm(), scorer(), scorer()


def run_trl(s: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    import trl.experimental.ppo.ppo_trainer as trl_ppo
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf_dist.data.tokenize import encode_prompt
    from rlhf_dist.models import load_tokenizer

    t0 = time.perf_counter()
    dirs = model_dirs(s["size"])
    tokenizer = load_tokenizer(dirs["policy"])
    tokenizer.padding_side = "left"
    ids = [encode_prompt(tokenizer, t, s["max_prompt"]) for t in prompt_texts()]
    dataset = Dataset.from_dict({"input_ids": ids})
    policy, ref, reward, value = trl_models(dirs)
    total_steps = s["warmup"] + s["steps"]
    args = PPOConfig(
        output_dir=str(SCRATCH / "runs" / f"trl-{s['size']}-{os.getpid()}"),
        per_device_train_batch_size=s["batch"], gradient_accumulation_steps=1,  # one optimizer step per mini-batch
        num_mini_batches=s["minibatches"], num_ppo_epochs=s["epochs"], local_rollout_forward_batch_size=s["batch"],
        total_episodes=s["batch"] * total_steps, response_length=s["response"], temperature=1.0,
        stop_token=None, stop_token_id=None,  # fixed-length responses (TRL's default)
        learning_rate=s["lr"], adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0, kl_coef=0.05, kl_estimator="k1",
        bf16=False, fp16=False, use_cpu=device() == "cpu", gradient_checkpointing=False,
        report_to="none", save_strategy="no", logging_steps=1, num_sample_generations=0,
        disable_tqdm=True, seed=s["seed"], dataloader_num_workers=0,
    )
    lengths, gen_seconds = [], []
    original = trl_ppo.batch_generation

    def timed_generation(model, queries, *a, **kw):
        started = time.perf_counter()
        out = original(model, queries, *a, **kw)
        gen_seconds.append(time.perf_counter() - started)
        lengths.append(out[0].shape[1] - queries.shape[1])
        return out

    trl_ppo.batch_generation = timed_generation
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset, eval_dataset=dataset.select(range(8)),
                         callbacks=[Clock()])
    trainer.train()
    periods = [b - a for a, b in zip(marks, marks[1:])]
    return {"framework": "trl", "periods": periods, "startup_s": marks[0] - t0, "wall_s": time.perf_counter() - t0,
            "response_lengths": lengths, "generation_s": gen_seconds, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arm", choices=["rlhf", "trl"])
    ap.add_argument("--settings", default="{}")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    s = {**DEFAULTS, **json.loads(a.settings)}
    threads = setup_env(s["threads"] if a.arm == "trl" else None)
    load_before = load()
    out = run_rlhf(s) if a.arm == "rlhf" else run_trl(s)
    if s["fixed_length"]:  # the comparison is only fair at the same number of generated tokens
        lengths = ([h["response/length"] for h in out["history"]] if a.arm == "rlhf" else out["response_lengths"])
        if any(abs(x - s["response"]) > 1e-6 for x in lengths):
            raise SystemExit(f"{a.arm}: response lengths {lengths} != fixed length {s['response']}")
    out.update(settings=s, load_before=load_before, load_after=load(), driver_threads=threads)
    Path(a.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
