"""The rows of `make gpu-check`: each gathers its facts on the GPU and hands them to verdicts.py.

Each row function runs in its own process (runner.py), takes its scratch dir and returns (value, note) or
raises verdicts.CheckFailed / verdicts.Skip. Runs go through the `rlhf-dist` CLI with overrides of
configs/tiny.yaml (config-built models, built-in data), as a user would run them: a GPU run is the CPU run
with another device string. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.gpu_check.runner import REPO, Check
from bench.gpu_check.verdicts import (
    PINNED,
    CheckFailed,
    EnvFacts,
    adam_verdict,
    environment_verdict,
    ppo_verdict,
    rm_verdict,
    sleep_verdict,
)

LOCK = REPO / "requirements" / "lock" / "gpu.txt"
TINY = "configs/tiny.yaml"
ROLES = ("policy", "critic", "reference", "reward", "rollout")


def cuda_overrides() -> list[str]:
    """Every role on CUDA, colocated on a fifth of a GPU, one policy rank (tiny.yaml has 2); vLLM eager, 15%."""
    return ["cluster.device=cuda", "cluster.colocate=true", "cluster.policy.num_actors=1", "rollout.backend=vllm",
            "rollout.gpu_memory_utilization=0.15", "rollout.enforce_eager=true",
            *(f"cluster.{r}.gpus_per_actor=0.2" for r in ROLES)]


def _quiet_run(run_dir: Path) -> list[str]:
    return [f"run.output_dir={run_dir}", "tracking.tensorboard=false", "tracking.progress=false"]


# --- environment -------------------------------------------------------------------------------------------

def _installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _nvcc_text() -> str | None:
    """`nvcc --version` of the nvcc on PATH, else the one in torch's CUDA_HOME (where DeepSpeed looks)."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = shutil.which("nvcc") or (shutil.which(str(Path(CUDA_HOME) / "bin" / "nvcc")) if CUDA_HOME else None)
    if nvcc is None:
        return None
    proc = subprocess.run([nvcc, "--version"], check=False, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def environment(workdir: Path) -> tuple[float, str]:
    import importlib.util

    import torch
    from deepspeed.git_version_info import installed_ops

    facts = EnvFacts(installed={n: _installed(n) for n in PINNED}, torch_cuda=torch.version.cuda,
                     nvcc_text=_nvcc_text(), ninja_module=importlib.util.find_spec("ninja") is not None,
                     ninja_path=shutil.which("ninja"), cxx_path=shutil.which("c++") or shutil.which("g++"),
                     cpu_adam_prebuilt=bool(installed_ops.get("cpu_adam")))
    value, note = environment_verdict(facts, LOCK.read_text())
    return value, f"{torch.cuda.get_device_name(0)}; {note}"


# --- DeepSpeed CPU Adam ------------------------------------------------------------------------------------

def cpu_adam(workdir: Path) -> tuple[float, str]:
    """DeepSpeedCPUAdam (what ZeRO optimizer offload steps with on CUDA) vs torch AdamW: one step, same
    params and grads (JIT-builds the cpu_adam op unless the image prebuilt it)."""
    import torch
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    gen = torch.Generator().manual_seed(0)
    shapes = [(512, 256), (256,), (3, 1000)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    hp = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}

    def one_step(make) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(p.clone()) for p in start]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        make(params).step()
        return [p.detach() for p in params]

    ours = one_step(lambda ps: DeepSpeedCPUAdam(ps, adamw_mode=True, **hp))
    ref = one_step(lambda ps: torch.optim.AdamW(ps, **hp))
    max_diff = max(float((a - b).abs().max()) for a, b in zip(ours, ref))
    min_move = min(float((a - s).abs().min()) for a, s in zip(ours, start))
    return adam_verdict(max_diff, min_move, hp["lr"])


# --- vLLM sleep / wake_up ----------------------------------------------------------------------------------

def vllm_sleep(workdir: Path) -> tuple[float, str]:
    """The project's VLLMEngine with sleep mode: level 1 then wake_up gives the same seeded tokens; level 2
    gives back >= 90% of what the engine took (torch.cuda.mem_get_info: what another process would get)."""
    import torch

    from rlhf_dist.backends.rollout.vllm_engine import VLLMEngine
    from rlhf_dist.config import load_config
    from rlhf_dist.config.schema_parts import SamplingConfig
    from rlhf_dist.models import resolve_model_path

    cfg = load_config(TINY, cuda_overrides())
    model_dir = resolve_model_path(cfg.policy.path, seed=cfg.run.seed)
    def free() -> int:  # device-wide: what another process could get
        return torch.cuda.mem_get_info()[0]

    free_before = free()
    engine = VLLMEngine(model_dir, cfg.rollout, "cuda", "float32", seed=0, sleep_mode=True)
    llm = engine._llm  # VLLMEngine.sleep() picks one level itself; here both are measured
    prompts, sampling = [[1 + i, 2, 3, 4] for i in range(8)], SamplingConfig(max_new_tokens=16, temperature=1.0)

    def tokens() -> list[list[int]]:
        return [s.response_ids for samples in engine.generate(prompts, sampling, seed=123) for s in samples]

    before = tokens()
    free_awake = free()
    llm.sleep(level=1)
    free_level1 = free()
    llm.wake_up()
    after = tokens()
    llm.sleep(level=2)  # weights dropped too: only a reload could wake it
    free_level2 = free()
    return sleep_verdict(free_before, free_awake, free_level1, free_level2, before, after)


# --- rlhf-dist rm with ZeRO-3 ------------------------------------------------------------------------------

def rm_overrides(run_dir: Path) -> list[str]:
    return [*_quiet_run(run_dir), "data.demo_size=64", "reward.epochs=1", "reward.train.backend=deepspeed",
            "reward.train.zero_stage=3", "cluster.policy.num_actors=1", *cuda_overrides()]


def _cli(stage: str, overrides: list[str]) -> int:
    """`rlhf-dist STAGE configs/tiny.yaml --k=v ...`; its output goes to the row's log."""
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", "rlhf_dist.cli", stage, TINY, *(f"--{o}" for o in overrides)],
                          check=False, cwd=REPO, stdin=subprocess.DEVNULL).returncode


def rm_zero3(workdir: Path) -> tuple[float | None, str]:
    from rlhf_dist.tracking.metrics import read_metrics

    run_dir = workdir / "run"
    code = _cli("rm", rm_overrides(run_dir))
    return rm_verdict(code, read_metrics(run_dir / "metrics.jsonl"))


# --- PPO, one row per sync transport / layout --------------------------------------------------------------

@dataclass(frozen=True)
class PPOCase:
    overrides: tuple[str, ...]
    dtype: str  # policy.dtype: picks the parity bound
    steps: int  # >= 2: step 2 generates on weights the first sync sent


PPO_CASES = {
    "ppo-object-store": PPOCase(("cluster.colocate=true",), "float32", 2),
    "ppo-cuda-ipc": PPOCase(("cluster.colocate=true", "rollout.sync_backend=cuda_ipc"), "bfloat16", 2),
    # 3 steps: adapter versions 1 and 2 generate steps 2 and 3
    "ppo-lora-adapter": PPOCase(("cluster.colocate=true", "policy.lora.enabled=true", "rollout.lora_sync=adapter"),
                                "float32", 3),
    # the engine on a GPU of its own; policy, critic and reference share the other
    "ppo-nccl": PPOCase(("cluster.colocate=false", "rollout.sync_backend=nccl", "cluster.rollout.gpus_per_actor=1"),
                        "float32", 2),
    # rank i of each role on GPU i; 0.3 each keeps two ranks' bundles from fitting on one GPU (NCCL)
    "ppo-zero3-2rank": PPOCase(("cluster.colocate=true", "cluster.policy.num_actors=2", "cluster.critic.num_actors=2",
                                "rollout.num_engines=2", "cluster.policy.gpus_per_actor=0.3",
                                "cluster.critic.gpus_per_actor=0.3"), "float32", 2),
    "ppo-rollout-tp2": PPOCase(("cluster.colocate=false", "rollout.tensor_parallel_size=2",
                                "cluster.rollout.gpus_per_actor=2"), "float32", 2),
}


def ppo_overrides(case: PPOCase, run_dir: Path) -> list[str]:
    return [*_quiet_run(run_dir), "data.demo_size=32", f"ppo.steps={case.steps}", "ppo.rollout_batch_size=8",
            "checkpoint.every_steps=0", "ppo.policy_train.zero_stage=3",
            "ppo.critic_train.zero_stage=3", "ppo.old_logprobs=recompute", "ppo.max_staleness=0",
            f"policy.dtype={case.dtype}", *cuda_overrides(), *case.overrides]


def plan_peaks_gib(cfg, gpus: int, gpu_mem_gib: float) -> dict[str, float]:
    """`rlhf-dist plan`'s per-actor peak of each role in GiB (rank 0, the sync sender: the largest);
    CheckFailed when the plan says the config does not fit."""
    from rlhf_dist.cluster.memory import GIB
    from rlhf_dist.cluster.placement import Hardware
    from rlhf_dist.cluster.plan import make_plan

    plan = make_plan(cfg, Hardware(nodes=1, gpus_per_node=gpus, gpu_mem_gib=gpu_mem_gib))
    if plan.problems:
        raise CheckFailed("plan: " + "; ".join(plan.problems))
    return {role: mem.rank_peak(0) / GIB for role, mem in plan.memory.items()}


def ppo_row(name: str, workdir: Path) -> tuple[float, str]:
    import torch

    from rlhf_dist.config import load_config
    from rlhf_dist.tracking.metrics import read_metrics

    case, run_dir = PPO_CASES[name], workdir / "run"
    overrides = ppo_overrides(case, run_dir)
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    plan_gib = plan_peaks_gib(load_config(TINY, overrides), torch.cuda.device_count(), total)
    code = _cli("ppo", overrides)
    if code:
        raise CheckFailed(f"rlhf-dist ppo exited {code} (see the log)")
    return ppo_verdict(read_metrics(run_dir / "metrics.jsonl", phase="ppo"), case.dtype, plan_gib, case.steps)


def ppo_object_store(workdir: Path) -> tuple[float, str]:
    return ppo_row("ppo-object-store", workdir)


def ppo_cuda_ipc(workdir: Path) -> tuple[float, str]:
    return ppo_row("ppo-cuda-ipc", workdir)


def ppo_lora_adapter(workdir: Path) -> tuple[float, str]:
    return ppo_row("ppo-lora-adapter", workdir)


def ppo_nccl(workdir: Path) -> tuple[float, str]:
    return ppo_row("ppo-nccl", workdir)


def ppo_zero3_2rank(workdir: Path) -> tuple[float, str]:
    return ppo_row("ppo-zero3-2rank", workdir)


def ppo_rollout_tp2(workdir: Path) -> tuple[float, str]:
    return ppo_row("ppo-rollout-tp2", workdir)


_ROWS = "bench.gpu_check.rows"
NCCL_WHY = "NCCL refuses two ranks on one device"
# In order of what the check is for: a broken sync must fail first of all, so the PPO rows come right after the
# cheap ones; cpu-adam last (its time is the cpu_adam JIT build, minutes unless the image prebuilt the op; the
# environment row says which). Limits sum past the 480 s budget on purpose: a slow row eats into the later
# ones' time, and a row left without time is FAIL, never silently skipped.
CHECKS = [
    Check("environment", f"{_ROWS}:environment", "problems", 90),
    Check("vllm-sleep", f"{_ROWS}:vllm_sleep", "freed", 150),
    Check("ppo-object-store", f"{_ROWS}:ppo_object_store", "max|dlogp|", 200),
    Check("ppo-cuda-ipc", f"{_ROWS}:ppo_cuda_ipc", "max|dlogp|", 200),
    Check("ppo-lora-adapter", f"{_ROWS}:ppo_lora_adapter", "max|dlogp|", 200),
    Check("rm-zero3", f"{_ROWS}:rm_zero3", "loss", 150),
    Check("cpu-adam", f"{_ROWS}:cpu_adam", "max|diff|", 180),
    Check("ppo-nccl", f"{_ROWS}:ppo_nccl", "max|dlogp|", 200, gpus=2, why_gpus=f"NCCL sync, {NCCL_WHY}"),
    Check("ppo-zero3-2rank", f"{_ROWS}:ppo_zero3_2rank", "max|dlogp|", 200, gpus=2,
          why_gpus=f"multi-rank ZeRO-3 on CUDA, {NCCL_WHY}"),
    Check("ppo-rollout-tp2", f"{_ROWS}:ppo_rollout_tp2", "max|dlogp|", 200, gpus=3,
          why_gpus="TP-2 engine on 2 GPUs of its own + the trainers' GPU (`plan`: a colocated TP-2 bundle needs 2.6)"),
]
