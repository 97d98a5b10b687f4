"""Pairs from a policy for people to judge: two samples per prompt from the project's rollout engine.

Every pair records what made it: the policy dir and a hash of its weights, the sampling settings,
the seed, and each response's per-token log-probs (`rlhf-dist feedback generate`, service rounds).

Where the engine runs: a `Sampler` given by the caller (driver/sampling.py `pair_sampler`: rollout engines on
the cluster, eval.placement 'cluster' or 'auto' on CUDA), else one engine in this process (a one-process CPU
run). This layer sits below Ray, so the cluster's sampler is handed in from above.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.data.records import ComparisonPair
from rlhf_dist.tracking.console import StageProgress
from rlhf_dist.tracking.quiet import output_to

if TYPE_CHECKING:
    from rlhf_dist.backends.rollout.base import RolloutSample
    from rlhf_dist.config.schema_parts import SamplingConfig

log = logging.getLogger(__name__)
# (model dir, prompt token ids, sampling, seed) -> per prompt, sampling.samples_per_prompt RolloutSamples
Sampler = Callable[[Path, list[list[int]], "SamplingConfig", int], list[list["RolloutSample"]]]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model")


def policy_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the model dir's weight, config and tokenizer files (names and bytes), 16 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def sample_responses(cfg: RLHFConfig, model_dir: str | Path, prompts: Sequence[str], seed: int,
                     per_prompt: int, sampler: Sampler | None = None
                     ) -> tuple[list[list[tuple[str, list[float]]]], dict]:
    """per_prompt (text, per-token log-probs) samples for each prompt, and the sampling settings used.

    sampler: where the engines run (see the module docstring); None: one engine in this process."""
    from rlhf_dist.data.tokenize import encode_prompt
    from rlhf_dist.models import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    sampling = with_overrides(cfg.rollout.sampling, {"samples_per_prompt": per_prompt}, section="rollout.sampling")
    settings = {**sampling.model_dump(), "backend": cfg.rollout.backend, "dtype": cfg.policy.dtype}
    ids = [encode_prompt(tokenizer, p, cfg.data.max_prompt_length) for p in prompts]
    where = "rollout engines on the cluster" if sampler is not None else "in this process"
    # A progress display (spinner + elapsed; plain lines off a terminal) says it is working.
    with StageProgress(f"sampling {len(ids)} prompts x {per_prompt} ({cfg.rollout.backend}, {where})",
                       enabled=cfg.tracking.progress):
        samples = (sampler or _sample_in_process(cfg))(Path(model_dir), ids, sampling, seed)
    texts = [[(tokenizer.decode(s.response_ids, skip_special_tokens=True).strip() or "(empty)",
               [float(x) for x in s.logprobs]) for s in group] for group in samples]
    return texts, settings


def _sample_in_process(cfg: RLHFConfig) -> Sampler:
    """One engine in this process, shut down after: its C++ warnings and loading bars go to a log file."""
    def sample(model_dir: Path, ids: list[list[int]], sampling: SamplingConfig, seed: int) -> list[list[RolloutSample]]:
        from rlhf_dist.backends.rollout import build_rollout_engine

        with output_to(Path(cfg.run.output_dir) / "logs" / f"{cfg.rollout.backend}-driver.log"):
            engine = build_rollout_engine(model_dir, cfg.rollout, cfg.cluster.device, cfg.policy.dtype, seed)
            try:
                return engine.generate(ids, sampling, seed=seed)
            finally:
                engine.shutdown()

    return sample


def model_source(model_dir: str | Path) -> str:
    """How a pair records where a response came from: the model dir and a hash of its files."""
    return f"{Path(model_dir).resolve()}@{policy_fingerprint(model_dir)}"


def sample_pairs(cfg: RLHFConfig, policy_dir: str | Path, prompts: Sequence[str], seed: int,
                 sampler: Sampler | None = None) -> list[ComparisonPair]:
    """Two responses per prompt from the policy at policy_dir (cfg.rollout's engine and sampling), on the
    engines `sampler` runs (None: one in this process)."""
    texts, settings = sample_responses(cfg, policy_dir, prompts, seed, per_prompt=2, sampler=sampler)
    source = model_source(policy_dir)
    pairs = [ComparisonPair(prompt=prompt, response_a=a, response_b=b, source_a=source, source_b=source,
                            sampling=settings, seed=seed, logprobs_a=lp_a, logprobs_b=lp_b)
             for prompt, ((a, lp_a), (b, lp_b)) in zip(prompts, texts)]
    log.info("sampled %d pairs from %s", len(pairs), source)
    return pairs
