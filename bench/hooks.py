"""Benchmark-only patches, applied in every Ray worker (runtime_env `worker_process_setup_hook`).

Fixed-length generation: the benchmarks compare engines and frameworks at the SAME number of
generated tokens, so every response must run to `max_new_tokens`. rlhf-dist's SamplingConfig has
no switch for that (its engines stop at every eos id; see bench/README.md, "engine notes"), so
with RLHF_BENCH_FIXED_LENGTH=1 the two rollout engines are patched to ignore eos:

- vLLM: SamplingParams(ignore_eos=True, stop_token_ids=None); the eos logit is NOT masked, the
  distribution is unchanged; a sampled eos is just another token.
- HF generate: eos_token_id=None in the GenerationConfig and no cut at stop ids.

TRL's PPOTrainer does the same by default (`stop_token=None` sets the policy's eos to None).
What-if patches (RLHF_BENCH_PATCHES=name,name; off unless a benchmark asks): engine changes
the benchmarks found worth making, applied to the installed engine so their effect can be
measured before anyone changes rlhf_dist/. Each is described in bench/README.md.

- fused_adam:      torch.optim.AdamW(..., fused=True) in the train engines (TRL's default optimiser).
- ds_single_rank:  a DeepSpeed ZeRO-0 engine with ONE data-parallel rank skips the gradient "all-reduce"
                   (DeepSpeed flattens every gradient into a bucket, all-reduces it over 1 rank, copies back).
- logits_to_keep:  the policy/reference forwards compute logits for the response positions only.
- sync_tied:       weight sync skips a tied lm_head (vLLM re-ties it; it is dropped on arrival).
- vllm_one_call:   the vLLM engine submits a whole rollout batch per LLM.generate (scheduler budget
                   16384 tokens / 256 sequences) instead of 2048 prompt tokens / 128 requests per call.
- sync_numpy:      weight buckets travel as numpy arrays (Ray's zero-copy path) instead of pickled
                   torch tensors; the engine side wraps them back with torch.from_numpy.

This module imports nothing heavy at import time.
"""

from __future__ import annotations

import os


def worker_setup() -> None:
    """Ray worker_process_setup_hook."""
    if os.environ.get("RLHF_BENCH_FIXED_LENGTH") == "1":
        patch_fixed_length()
    apply_whatif(os.environ.get("RLHF_BENCH_PATCHES", ""))


def apply_whatif(names: str | list[str]) -> list[str]:
    names = [n for n in (names.split(",") if isinstance(names, str) else names) if n]
    for name in names:
        WHATIF[name]()
    return names


def patch_fused_adam() -> None:
    import torch

    from rlhf_dist.backends.train import deepspeed_engine, torch_engine

    def build_optimizer(model, cfg):
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay, fused=True)

    deepspeed_engine.build_optimizer = build_optimizer
    torch_engine.build_optimizer = build_optimizer


def patch_ds_single_rank() -> None:
    from rlhf_dist.backends.train import deepspeed_engine

    original = deepspeed_engine.DeepSpeedEngine.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.dp_size == 1 and self.zero_stage == 0:
            self.ds_engine.enable_backward_allreduce = False  # nothing to average over one rank

    deepspeed_engine.DeepSpeedEngine.__init__ = init


def patch_logits_to_keep() -> None:
    from rlhf_dist.models import forward

    def response_logits(model, sequences, attention_mask, response_width):
        out = model(input_ids=sequences, attention_mask=attention_mask,
                    position_ids=forward.position_ids_from_mask(attention_mask), use_cache=False,
                    logits_to_keep=response_width + 1)
        logits = out.logits if hasattr(out, "logits") else out[0]  # [B, R+1, V]
        return logits[:, :-1, :]

    forward.response_logits = response_logits


def patch_sync_tied() -> None:
    from rlhf_dist.workers import trainers

    original = trainers.PolicyWorker._hf_state_dict

    def hf_state_dict(self):
        state = original(self)
        config = getattr(self.engine.module, "config", None)
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        return state

    trainers.PolicyWorker._hf_state_dict = hf_state_dict


def patch_sync_numpy() -> None:
    import warnings

    import torch

    from rlhf_dist.workers import inference, trainers

    def weight_bucket(self, index):
        return [(name, t.detach().numpy()) for name, t in self._buckets[index]]

    original = inference.RolloutWorker.update_weights

    def update_weights(self, bucket):
        with warnings.catch_warnings():  # read-only shared-memory arrays: vLLM copies them into its weights
            warnings.simplefilter("ignore", UserWarning)
            tensors = [(name, torch.from_numpy(a) if not isinstance(a, torch.Tensor) else a) for name, a in bucket]
        return original(self, tensors)

    trainers.PolicyWorker.weight_bucket = weight_bucket
    inference.RolloutWorker.update_weights = update_weights


def patch_vllm_one_call() -> None:
    from rlhf_dist.backends.rollout import vllm_engine

    original = vllm_engine.VLLMEngine._engine_kwargs

    def engine_kwargs(self, dtype, seed):
        kwargs = original(self, dtype, seed)
        # one scheduler step holds every prefill of a call: no split prefill, so no seeded-prefill crash
        kwargs.update(max_num_batched_tokens=16384, max_num_seqs=256)
        return kwargs

    vllm_engine.VLLMEngine._engine_kwargs = engine_kwargs
    vllm_engine.MAX_PREFILL_TOKENS_PER_CALL = 16384
    vllm_engine.MAX_REQUESTS_PER_CALL = 256


WHATIF = {"vllm_one_call": patch_vllm_one_call, "ds_single_rank": patch_ds_single_rank, "fused_adam": patch_fused_adam, "logits_to_keep": patch_logits_to_keep, "sync_tied": patch_sync_tied,
          "sync_numpy": patch_sync_numpy}


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
