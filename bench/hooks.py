"""Benchmark-only patches, applied in every Ray worker (runtime_env `worker_process_setup_hook`).

Fixed-length generation: the benchmarks compare engines and frameworks at the SAME number of
generated tokens, so every response must run to `max_new_tokens`. rlhf-dist's SamplingConfig has
no switch for that (its engines stop at every eos id; see bench/README.md, "engine notes"), so
with RLHF_BENCH_FIXED_LENGTH=1 the two rollout engines are patched to ignore eos:

- vLLM: SamplingParams(ignore_eos=True, stop_token_ids=None); the eos logit is NOT masked, the
  distribution is unchanged; a sampled eos is just another token.
- HF generate: eos_token_id=None in the GenerationConfig and no cut at stop ids.

TRL's PPOTrainer does the same by default (`stop_token=None` sets the policy's eos to None).
This module imports nothing heavy at import time.
"""

from __future__ import annotations

import os


def worker_setup() -> None:
    """Ray worker_process_setup_hook."""
    if os.environ.get("RLHF_BENCH_FIXED_LENGTH") == "1":
        patch_fixed_length()


def patch_fixed_length() -> None:
    from rlhf_dist.backends.rollout import hf_engine, vllm_engine

    if getattr(vllm_engine.VLLMEngine, "_bench_fixed_length", False):
        return

    def vllm_sampling_params(self, sampling, seed):
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.samples_per_prompt,
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=max(sampling.top_k, 0),
            seed=seed,
            logprobs=0,
            ignore_eos=True,
            stop_token_ids=None,
            detokenize=False,
        )

    vllm_engine.VLLMEngine._sampling_params = vllm_sampling_params
    vllm_engine.VLLMEngine._bench_fixed_length = True

    original_config = hf_engine.HFEngine._generation_config
    original_chunk = hf_engine.HFEngine._generate_chunk

    def hf_generation_config(self, sampling):
        cfg = original_config(self, sampling)
        cfg.eos_token_id = None
        return cfg

    def hf_generate_chunk(self, prompts, gen_cfg):
        stop_ids, self.stop_ids = self.stop_ids, [-1]  # no token id matches: rows are never cut
        try:
            return original_chunk(self, prompts, gen_cfg)
        finally:
            self.stop_ids = stop_ids

    hf_engine.HFEngine._generation_config = hf_generation_config
    hf_engine.HFEngine._generate_chunk = hf_generate_chunk
