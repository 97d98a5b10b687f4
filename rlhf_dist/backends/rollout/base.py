"""The rollout-engine interface: sample responses from the current policy, take new weights.

    engine = build_rollout_engine(model_dir, cfg.rollout, device="cpu", dtype="float32", seed=0)
    samples = engine.generate(prompt_ids, cfg.rollout.sampling, seed=step)   # [prompt][sample]
    engine.update_weights(bucket)   # (HF name, tensor) pairs; call once per bucket
    engine.shutdown()

Logprob convention (both engines): `RolloutSample.logprobs[t]` is the model's RAW
log-probability of the sampled token, float32: log_softmax(logits)[token] of the
unmodified logits, i.e. before temperature / top-k / top-p. This is exactly what the
trainer recomputes with log_softmax of its own logits, so PPO ratios start at 1 when
the rollout and training weights agree (up to kernel numerics, ~1e-5 in fp32).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from rlhf_dist.config.schema_parts import RolloutConfig, SamplingConfig

if TYPE_CHECKING:  # torch is heavy; only the annotations need it here
    import torch


@dataclass
class RolloutSample:
    """One sampled response.

    prompt_ids: [P] prompt tokens as given.
    response_ids: [R] generated tokens, R <= max_new_tokens; ends with an eos id iff finish_reason == "stop".
    logprobs: [R] raw float32 log-probability of each response token under the sampling policy.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (hit an eos id) or "length" (hit max_new_tokens)


class RolloutEngine(ABC):
    """A generation engine holding one copy of the policy weights."""

    # Whether this kind of engine can serve LoRA adapters (vLLM: when started with max_lora_rank);
    # rollout.lora_sync 'auto' then sends adapters only, other engines get the merged weights.
    supports_lora_adapters: bool = False

    @abstractmethod
    def generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int
    ) -> list[list[RolloutSample]]:
        """Sample `sampling.samples_per_prompt` responses for each prompt.

        prompt_ids: [B][P_i] token ids (no padding). Returns [B][samples_per_prompt] samples, the
        outer list in prompt order. The same (prompts, sampling, seed) gives the same samples.
        """

    def sleep(self, level: int = 1) -> None:
        """Release device memory until wake_up (colocated engines); engines that cannot: nothing.

        level (config/topology.py engine_sleep_level): 1 keeps the weights (a host copy), 2 discards them
        (the caller sends every weight again before the next generation)."""

    def wake_up(self, free_host_cache: bool = False) -> None:
        """Take the memory back before the next weight sync and generation. free_host_cache: give back the
        pinned host memory a level-1 sleep left in the allocator's cache (no later sleep reuses it)."""

    def worker_peak_memory(self) -> int:
        """Peak device bytes of engine worker processes other than this one since the last call (0: the
        engine runs in this process, whose own peak covers it)."""
        return 0

    @abstractmethod
    def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Load new policy weights in place, then reset the prefix cache.

        named_tensors: (HF state-dict name, tensor) pairs, e.g. ('model.layers.0.mlp.up_proj.weight', W);
        any part of the state dict, so one sync may be split into several calls (buckets). vLLM
        applies a fused layer (q/k/v, gate/up) once all its parts have arrived, see VLLMEngine.
        Unknown names or wrong shapes raise ValueError before anything of the call is loaded.
        """

    def load_lora_adapter(
        self, tensors: list[tuple[str, torch.Tensor]], adapter_config: dict, version: int
    ) -> None:
        """Serve the policy as base weights + this LoRA adapter from now on (replacing the previous one).

        tensors: peft-named adapter weights (get_peft_model_state_dict, e.g.
        'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'); adapter_config: peft's
        LoraConfig.to_dict(); version: the sync count, distinct per call.
        """
        raise ValueError(f"{type(self).__name__} cannot load LoRA adapters: use rollout.lora_sync 'merged'")

    @abstractmethod
    def reset_prefix_cache(self) -> None:
        """Drop cached KV of earlier prompts (must follow any weight change)."""

    @abstractmethod
    def shutdown(self) -> None:
        """Release the engine's memory; the object is unusable afterwards."""


def request_seeds(seed: int, count: int) -> list[int]:
    """`count` independent 63-bit seeds derived from `seed` (one per prompt / chunk).

    Why: one seed per request keeps each prompt's samples independent of which other
    prompts share the batch, and distinct across prompts.
    """
    words = np.random.SeedSequence(seed % 2**64).generate_state(count, dtype=np.uint64)
    return [int(w >> np.uint64(1)) for w in words]  # 63 bits: fits every engine's int64 seed


def stop_token_ids(model_dir: str | Path) -> list[int]:
    """Every eos id of the model: the tokenizer's eos plus generation_config.json's eos list.

    Why both: chat models often list extra end ids (e.g. end-of-turn) only in the generation config.
    """
    from transformers import AutoTokenizer, GenerationConfig

    ids: list[int] = []
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    try:
        gen_eos = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except OSError:  # no generation_config.json
        gen_eos = None
    if gen_eos is not None:
        ids.extend(int(i) for i in (gen_eos if isinstance(gen_eos, Sequence) else [gen_eos]))
    if not ids:
        raise ValueError(f"{model_dir}: neither the tokenizer nor generation_config.json defines an eos token")
    return sorted(set(ids))


def build_rollout_engine(
    model_dir: str | Path,
    cfg: RolloutConfig,
    device: Literal["cpu", "cuda"],
    dtype: str,
    seed: int,
    max_model_len: int | None = None,
    max_lora_rank: int | None = None,
    sleep_mode: bool = False,
) -> RolloutEngine:
    """The engine named by cfg.backend ('vllm' or 'hf') over an HF model dir.

    max_model_len caps prompt + response tokens (vLLM sizes its buffers by it); None picks
    min(max_position_embeddings, 4096). max_lora_rank: start vLLM ready for LoRA adapters of
    this rank (load_lora_adapter); None = no adapters (the HF engine never takes them).
    sleep_mode: colocated on CUDA, vLLM releases its GPU memory between generations (sleep/wake_up).
    """
    if cfg.backend == "vllm":
        from rlhf_dist.backends.rollout.vllm_engine import VLLMEngine  # imports vllm lazily

        return VLLMEngine(model_dir, cfg, device=device, dtype=dtype, seed=seed, max_model_len=max_model_len,
                          max_lora_rank=max_lora_rank, sleep_mode=sleep_mode)
    if cfg.backend == "hf":
        from rlhf_dist.backends.rollout.hf_engine import HFEngine

        return HFEngine(model_dir, cfg, device=device, dtype=dtype, seed=seed)
    raise ValueError(f"unknown rollout backend '{cfg.backend}' (known: vllm, hf)")
