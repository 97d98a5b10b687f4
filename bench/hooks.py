"""Benchmark-only what-if patches, applied in every Ray worker (runtime_env `worker_process_setup_hook`)
or in-process, to measure a proposed engine change before anyone edits rlhf_dist/.

RLHF_BENCH_PATCHES=name,name selects them (off unless a benchmark asks). The patches that the
benchmarks found worth making have landed in the engine (fused AdamW, no one-rank all-reduce,
numpy weight sync without the tied lm_head, one vLLM call per rollout batch on CPU; see
bench/README.md); fixed-length generation is the `rollout.sampling.ignore_eos` option. Left:

- logits_to_keep: the policy/reference forwards compute logits for the response positions only
                  (measured: no gain on SmolLM2 at 16-token responses; kept to re-check elsewhere).

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import os


def worker_setup() -> None:
    """Ray worker_process_setup_hook."""
    apply_whatif(os.environ.get("RLHF_BENCH_PATCHES", ""))


def apply_whatif(names: str | list[str]) -> list[str]:
    names = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    unknown = [n for n in names if n not in WHATIF]
    if unknown:
        raise ValueError(f"unknown what-if patches {unknown}; known: {sorted(WHATIF)}")
    for name in names:
        WHATIF[name]()
    return names


def patch_logits_to_keep() -> None:
    from rlhf_dist.models import forward

    def response_logits(model, sequences, attention_mask, response_width):
        out = model(input_ids=sequences, attention_mask=attention_mask,
                    position_ids=forward.position_ids_from_mask(attention_mask), use_cache=False,
                    logits_to_keep=response_width + 1)
        logits = out.logits if hasattr(out, "logits") else out[0]  # [B, R+1, V]
        return logits[:, :-1, :]

    forward.response_logits = response_logits


WHATIF = {"logits_to_keep": patch_logits_to_keep}
