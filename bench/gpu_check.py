"""`make gpu-check`: the GPU paths on one machine, in at most ~8 minutes, as one table.

    python -m bench.gpu_check [--out bench/results/gpu_check.json] [--budget-s 480]

Rows (tiny config-built fp32 models from configs/tiny.yaml, real Ray, DeepSpeed over NCCL, vLLM on CUDA):
  vllm-cuda          vLLM generates on CUDA                       tokens/s
  ppo-zero3          one 1-GPU ZeRO-3 PPO step, object-store sync  max |d logprob| vLLM vs policy
  sync-cuda-ipc      the same, colocated, CUDA IPC sync            max |d logprob|
  sync-nccl          disaggregated, NCCL broadcast (2+ GPUs)       max |d logprob|
  sync-lora          LoRA policy, adapter-only sync                bytes per sync (max |d logprob| in the note)
  zero3-cpu-adam     ZeRO-3 + optimizer offload: DeepSpeedCPUAdam  max |d logprob|

A failing row shows its error's last line; nothing is faked: without CUDA the script prints one line and
exits 77 (nothing run). Exit 0: every row that ran passed; 1: a row failed. A row that cannot run on this
machine (one GPU for NCCL) or past the time budget says so as 'skip'.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

NO_GPU_EXIT = 77  # the automake convention for "skipped": distinct from pass (0) and fail (1)
PARITY = 1e-3  # fp32 on CUDA: vLLM's kernels vs transformers' (CPU: ~6e-6; TF32/ordering on GPU)
ROLES = ("policy", "critic", "reference", "reward", "rollout")


@dataclass
class Row:
    check: str
    status: str  # pass | fail | skip
    value: float | None
    unit: str
    seconds: float
    note: str = ""


def _ppo_overrides(out_dir: Path, colocate: bool, gpus: float) -> list[str]:
    return [f"run.output_dir={out_dir}", "tracking.tensorboard=false", "tracking.progress=false",
            "data.demo_size=32", "ppo.steps=1", "ppo.rollout_batch_size=8", "checkpoint.every_steps=0",
            "cluster.device=cuda", f"cluster.colocate={str(colocate).lower()}", "cluster.policy.num_actors=1",
            "ppo.policy_train.zero_stage=3", "ppo.critic_train.zero_stage=3", "rollout.backend=vllm",
            "rollout.gpu_memory_utilization=0.15", "rollout.enforce_eager=true",
            *(f"cluster.{r}.gpus_per_actor={gpus}" for r in ROLES)]


def _ppo(out_dir: Path, *extra: str, colocate: bool = True, gpus: float = 0.2) -> list[dict]:
    from rlhf_dist.config import load_config
    from rlhf_dist.stages.ppo import run_ppo_stage

    cfg = load_config("configs/tiny.yaml", _ppo_overrides(out_dir, colocate, gpus) + list(extra))
    return run_ppo_stage(cfg).history


def _parity(history: list[dict]) -> float:
    return max(m["rollout/logprob_abs_diff"] for m in history)


def check_vllm(tmp: Path) -> tuple[float, str]:
    import torch
    from vllm import LLM, SamplingParams

    from rlhf_dist.models import resolve_model_path

    llm = LLM(model=str(resolve_model_path("builtin:tiny-llama")), dtype="float32", enforce_eager=True,
              gpu_memory_utilization=0.15, seed=0)
    start = time.perf_counter()
    outs = llm.generate(["hello world"] * 64, SamplingParams(max_tokens=64, ignore_eos=True, temperature=1.0))
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    rate = tokens / (time.perf_counter() - start)
    del llm
    torch.cuda.empty_cache()
    return rate, f"{tokens} tokens on {torch.cuda.get_device_name(0)}"


def check_ppo_zero3(tmp: Path) -> tuple[float, str]:
    hist = _ppo(tmp / "zero3")
    return _parity(hist), f"sync {hist[-1]['sync/bytes'] / 2**20:.1f} MiB (object store)"


def check_ipc(tmp: Path) -> tuple[float, str]:
    hist = _ppo(tmp / "ipc", "rollout.sync_backend=cuda_ipc")
    return _parity(hist), f"sync {hist[-1]['sync/bytes'] / 2**20:.1f} MiB"


def check_nccl(tmp: Path) -> tuple[float, str]:
    import torch

    if torch.cuda.device_count() < 2:
        raise _Skip(f"needs 2 GPUs, {torch.cuda.device_count()} here: NCCL refuses two ranks on one device")
    # the engine on a whole GPU of its own; policy, critic and reference share the other one
    hist = _ppo(tmp / "nccl", "rollout.sync_backend=nccl", "cluster.rollout.gpus_per_actor=1",
                colocate=False, gpus=0.2)
    return _parity(hist), f"sync {hist[-1]['sync/bytes'] / 2**20:.1f} MiB"


def check_lora(tmp: Path) -> tuple[float, str]:
    hist = _ppo(tmp / "lora", "policy.lora.enabled=true", "rollout.lora_sync=adapter")
    parity = _parity(hist)
    if parity > PARITY:
        raise RuntimeError(f"max |d logprob| {parity:.2e} > {PARITY:g} after the adapter sync")
    return hist[-1]["sync/bytes"], f"max |d logprob| {parity:.2e}"


def check_cpu_adam(tmp: Path) -> tuple[float, str]:
    hist = _ppo(tmp / "cpu-adam", "ppo.policy_train.offload_optimizer=true")
    return _parity(hist), "DeepSpeedCPUAdam over pinned memory (compiles cpu_adam once)"


class _Skip(Exception):
    pass


CHECKS: list[tuple[str, Callable[[Path], tuple[float, str]], str, float | None]] = [
    ("vllm-cuda", check_vllm, "tokens/s", None),
    ("ppo-zero3", check_ppo_zero3, "max|dlp|", PARITY),
    ("sync-cuda-ipc", check_ipc, "max|dlp|", PARITY),
    ("sync-nccl", check_nccl, "max|dlp|", PARITY),
    ("sync-lora", check_lora, "bytes", None),
    ("zero3-cpu-adam", check_cpu_adam, "max|dlp|", PARITY),
]


def run_checks(budget_s: float) -> list[Row]:
    rows, begin = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, fn, unit, bound in CHECKS:
            if time.perf_counter() - begin > budget_s:
                rows.append(Row(name, "skip", None, unit, 0.0, f"not run: past the {budget_s:.0f} s budget"))
                continue
            start = time.perf_counter()
            try:
                value, note = fn(Path(tmp))
                ok = bound is None or value <= bound
                rows.append(Row(name, "pass" if ok else "fail", value, unit, time.perf_counter() - start,
                                note if ok else f"{value:.2e} > {bound:g}; {note}"))
            except _Skip as why:
                rows.append(Row(name, "skip", None, unit, time.perf_counter() - start, str(why)))
            except Exception as err:  # a row reports its error, the next one still runs
                traceback.print_exc(file=sys.stderr)
                last = f"{type(err).__name__}: {err}".strip().splitlines()[-1][:160]
                rows.append(Row(name, "fail", None, unit, time.perf_counter() - start, last))
            print(_line(rows[-1]), flush=True)
    return rows


def _line(row: Row) -> str:
    value = "-" if row.value is None else (f"{row.value:.3g}" if row.value < 1e4 else f"{row.value:,.0f}")
    return f"{row.check:<16} {row.status:<5} {value:>12} {row.unit:<9} {row.seconds:7.1f}s  {row.note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/gpu_check.json", help="where the table goes as JSON")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no new row after this many seconds")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): "
              f"nothing run, exit {NO_GPU_EXIT}")
        return NO_GPU_EXIT
    print(f"{'check':<16} {'state':<5} {'value':>12} {'unit':<9} {'time':>8}  note", flush=True)
    rows = run_checks(args.budget_s)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                               "rows": [asdict(r) for r in rows]}, indent=1))
    print(f"\n{sum(r.status == 'pass' for r in rows)} passed, {sum(r.status == 'fail' for r in rows)} failed, "
          f"{sum(r.status == 'skip' for r in rows)} skipped; table in {out}")
    return 1 if any(r.status == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
