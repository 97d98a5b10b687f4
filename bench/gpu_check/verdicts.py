"""The pass/fail logic of `make gpu-check`, pure and CPU-testable (tests/unit/test_gpu_check.py).

Every row function in rows.py gathers its facts on the GPU and hands them to one of these; they return
(value, note) or raise CheckFailed(reason, value). No torch, vLLM or Ray at import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

# The packages whose installed version must equal the GPU lock's pin (requirements/lock/gpu.txt).
PINNED = ("torch", "vllm", "deepspeed", "transformers", "ray", "peft")
# Engine vs trainer log-probs after a sync, max abs over action tokens, by the policy's dtype.
PARITY = {"float32": 1e-3, "bfloat16": 2e-2, "float16": 2e-2}
PEAK_SLACK = 1.15  # a role's measured peak may exceed `plan`'s figure by 15%
ADAM_TOL = 1e-5  # DeepSpeedCPUAdam vs torch AdamW, one step; a formula error moves params by ~lr = 1e-3
SLEEP_FREED = 0.9  # vLLM sleep(level=2) gives back at least this share of what the engine took


class CheckFailed(Exception):
    """The row ran and measured something out of bounds (value: the number the table shows)."""

    def __init__(self, reason: str, value: float | None = None):
        super().__init__(reason)
        self.value = value


class Skip(Exception):
    """The row cannot run on this machine (e.g. needs 2 GPUs); the reason goes into the table."""


def normalize(name: str) -> str:
    """PEP 503: 'Ray', 'ray_x', 'ray.x' compare equal to 'ray', 'ray-x'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, Requirement]:
    """The `name==version` lines of a uv/pip-compile lock (hash and comment lines skipped), by normalized name."""
    pins = {}
    for line in text.splitlines():
        if not line or line[0].isspace() or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line.rstrip("\\").strip())
        except InvalidRequirement:
            continue
        pins[normalize(req.name)] = req
    return pins


def version_problems(pins: Mapping[str, Requirement], installed: Mapping[str, str | None],
                     names: Iterable[str] = PINNED, lock: str = "requirements/lock/gpu.txt") -> list[str]:
    """One line per package of `names` whose installed version the lock's pin does not admit.
    PEP 440: a pin without a local label admits local builds ('2.14.0' admits '2.14.0+cu130')."""
    out = []
    for name in names:
        req, have = pins.get(normalize(name)), installed.get(name)
        if req is None:
            out.append(f"{name}: no pin in {lock}")
        elif have is None:
            out.append(f"{name}: not installed ({lock} pins {req.specifier})")
        elif not req.specifier.contains(have, prereleases=True):
            out.append(f"{name} {have} installed, {lock} pins {req.specifier}")
    return out


def nvcc_release(text: str) -> str | None:
    """'Cuda compilation tools, release 12.8, V12.8.93' -> '12.8'; None when the text has no release."""
    found = re.search(r"release (\d+)\.(\d+)", text)
    return f"{found[1]}.{found[2]}" if found else None


@dataclass
class EnvFacts:
    """What the environment row gathers: versions, torch's CUDA, nvcc's output, build tools, CPU Adam."""

    installed: dict[str, str | None]
    torch_cuda: str | None  # torch.version.cuda
    nvcc_text: str | None  # `nvcc --version` output; None: no nvcc found
    ninja_module: bool  # `import ninja` works
    ninja_path: str | None  # the ninja binary torch's extension builder runs
    cxx_path: str | None  # c++ / g++ on PATH
    cpu_adam_prebuilt: bool  # DeepSpeed's cpu_adam op installed prebuilt (no JIT at the first offload run)


def environment_verdict(facts: EnvFacts, lock_text: str) -> tuple[float, str]:
    """Value: the number of problems. nvcc missing is no failure: the project's CUDA path builds no DeepSpeed
    CUDA op (a torch AdamW is handed in; offload uses CPU Adam, which needs a C++ compiler and ninja only)."""
    problems = version_problems(lock_pins(lock_text), facts.installed)
    notes = [f"{n} {facts.installed.get(n)}" for n in PINNED if facts.installed.get(n)]
    if facts.torch_cuda is None:
        problems.append("torch is a CPU build (torch.version.cuda is None)")
    if facts.nvcc_text is None:
        notes.append("nvcc: none (torch's CUDA unchecked; DeepSpeed CUDA ops could not JIT-build, no preset "
                     "uses one; CPU Adam needs only a C++ compiler and ninja)")
    else:
        release = nvcc_release(facts.nvcc_text)
        if release is None:
            problems.append(f"nvcc --version printed no release: {facts.nvcc_text.strip()[-80:]!r}")
        elif facts.torch_cuda is not None and release != _major_minor(facts.torch_cuda):
            problems.append(f"torch.version.cuda {facts.torch_cuda} != nvcc release {release} (DeepSpeed's op "
                            "builds compile against nvcc's CUDA and load into torch's)")
        else:
            notes.append(f"CUDA {facts.torch_cuda} = nvcc {release}")
    if not (facts.ninja_module and facts.ninja_path):
        problems.append(f"ninja: module {'ok' if facts.ninja_module else 'missing'}, binary "
                        f"{facts.ninja_path or 'not on PATH'} (DeepSpeed JIT op builds need both)")
    if facts.cpu_adam_prebuilt:
        notes.append("cpu_adam prebuilt")
    elif facts.cxx_path is None:
        problems.append("DeepSpeed cpu_adam is not prebuilt and no C++ compiler (c++/g++) is on PATH to JIT it")
    else:
        notes.append(f"cpu_adam JIT-built at first use ({facts.cxx_path} + ninja)")
    if problems:
        raise CheckFailed("; ".join(problems), float(len(problems)))
    return 0.0, "; ".join(notes)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def adam_verdict(max_diff: float, min_move: float, lr: float) -> tuple[float, str]:
    """DeepSpeedCPUAdam vs torch AdamW after one step: equal within ADAM_TOL, and the step moved every
    parameter (~lr each on a first Adam step), so equality is not two no-ops agreeing."""
    if not math.isfinite(max_diff) or max_diff > ADAM_TOL:
        raise CheckFailed(f"max |DeepSpeedCPUAdam - torch AdamW| {max_diff:.3g} > {ADAM_TOL:g}", max_diff)
    if min_move < 0.5 * lr:
        raise CheckFailed(f"a parameter moved only {min_move:.3g} (a first Adam step moves each by ~lr {lr:g})",
                          max_diff)
    return max_diff, f"one step, smallest move {min_move:.3g} (lr {lr:g}); tolerance {ADAM_TOL:g}"


def sleep_verdict(free_before: int, free_awake: int, free_level1: int, free_level2: int,
                  tokens_before: list[list[int]], tokens_after: list[list[int]]) -> tuple[float, str]:
    """Free device bytes (torch.cuda.mem_get_info) before the engine, awake, asleep at level 1 (then woken),
    asleep at level 2; the same seeded requests before sleep and after the level-1 wake_up.
    Value: the share of the engine's memory that level 2 gives back."""
    taken = free_before - free_awake
    if taken <= 0:
        raise CheckFailed(f"the engine took no device memory ({taken / 2**30:.2f} GiB): nothing to measure")
    share1, share2 = (free_level1 - free_awake) / taken, (free_level2 - free_awake) / taken
    problems = []
    if share2 < SLEEP_FREED:
        problems.append(f"sleep(level=2) freed {share2:.1%} of the engine's {taken / 2**30:.2f} GiB "
                        f"(< {SLEEP_FREED:.0%})")
    differ = sum(a != b for a, b in zip(tokens_before, tokens_after)) + abs(len(tokens_before) - len(tokens_after))
    if differ or not tokens_before:
        problems.append(f"{differ} of {len(tokens_before)} seeded requests gave other tokens after "
                        "sleep(level=1) + wake_up()" if tokens_before else "no tokens generated")
    if problems:
        raise CheckFailed("; ".join(problems), share2)
    return share2, (f"engine {taken / 2**30:.2f} GiB; level 1 frees {share1:.1%}; "
                    f"{len(tokens_before)} seeded requests identical after level-1 wake_up")


def finite_metrics(rows: list[dict]) -> list[str]:
    """'key (step N) = nan' for every non-finite number in metrics.jsonl rows."""
    return [f"{k} (step {r.get('step')}) = {v}" for r in rows for k, v in r.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]


def rm_verdict(returncode: int, rows: list[dict]) -> tuple[float | None, str]:
    """`rlhf-dist rm` exits 0 and every number it logged is finite. Value: the last logged loss."""
    problems = [f"rlhf-dist rm exited {returncode}"] if returncode else []
    if not rows:
        problems.append("metrics.jsonl has no rows")
    problems += finite_metrics(rows)[:5]
    losses = [r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))]
    value = losses[-1] if losses else None
    if problems:
        raise CheckFailed("; ".join(problems), value)
    return value, f"{len(rows)} metric rows, all finite"


def ppo_verdict(rows: list[dict], dtype: str, plan_gib: Mapping[str, float], steps: int,
                first_synced: int = 2) -> tuple[float, str]:
    """The PPO rows' assertions on metrics.jsonl ('ppo' phase), each failure named:
    `steps` steps logged; log-prob parity from step `first_synced` on (the engine then runs on synced weights,
    not the ones it loaded from disk) within PARITY[dtype]; every */grad_norm finite; no skipped updates;
    each role's `memory/<role>/peak_gib` <= PEAK_SLACK x `plan`'s figure. Value: the parity after sync."""
    tol, problems = PARITY[dtype], []
    got = sorted({r["step"] for r in rows})
    if got != list(range(1, steps + 1)):
        problems.append(f"metrics.jsonl has ppo steps {got}, expected 1..{steps}")
    synced = [r for r in rows if r["step"] >= first_synced]
    diffs = [r.get("rollout/logprob_max_abs_diff") for r in synced]
    parity = max((d for d in diffs if d is not None), default=None)
    if synced and None in diffs:
        problems.append("no rollout/logprob_max_abs_diff in metrics.jsonl (needs ppo.old_logprobs 'recompute')")
    elif parity is not None and not parity <= tol:
        problems.append(f"log-prob parity after sync {parity:.3g} > {tol:g} ({dtype})")
    norms = [(k, r["step"], v) for r in rows for k, v in r.items() if k.endswith("/grad_norm")]
    if rows and not any(k == "policy/grad_norm" for k, _, _ in norms):
        problems.append("no policy/grad_norm in metrics.jsonl")
    problems += [f"{k} (step {s}) = {v}" for k, s, v in norms if not math.isfinite(v)]
    skipped = sum(r.get("train/skipped_updates", 0.0) for r in rows)
    if skipped:
        problems.append(f"{skipped:g} skipped updates")
    problems += [f"step {r['step']}: no weights synced (sync/bytes {r.get('sync/bytes')})"
                 for r in rows if not r.get("sync/bytes")]
    peaks, peak_problems = peak_table(rows, plan_gib)
    problems += peak_problems
    if problems:
        raise CheckFailed("; ".join(problems), parity)
    return parity, (f"steps {first_synced}-{steps}: max|dlogp| {parity:.2e} <= {tol:g}; grad norms finite; "
                    f"0 skipped; peak/plan GiB {peaks}")


def peak_table(rows: list[dict], plan_gib: Mapping[str, float]) -> tuple[str, list[str]]:
    """'policy 0.21/1.50 ...' and one problem per role whose measured peak is missing or over the bound."""
    parts, problems = [], []
    for role, planned in sorted(plan_gib.items()):
        key = f"memory/{role}/peak_gib"
        measured = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if not measured:
            problems.append(f"no {key} in metrics.jsonl")
            continue
        peak = max(measured)
        parts.append(f"{role} {peak:.2f}/{planned:.2f}")
        if not peak <= PEAK_SLACK * planned:
            problems.append(f"{role} peak {peak:.2f} GiB > {PEAK_SLACK:g} x plan {planned:.2f} GiB")
    return " ".join(parts), problems
