"""Build the policy, reference, reward model and critic from config."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_dist.config.schema_parts import CriticConfig, ModelConfig, RewardModelConfig
from rlhf_dist.models.builtin import resolve_model_path
from rlhf_dist.models.lora import apply_lora
from rlhf_dist.models.scalar_head import ScalarHeadModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def load_tokenizer(model_dir: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer with an end token (an encoder's [SEP] when it has no eos) and a pad token (eos if none)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # responses end with an end marker the RM can pool on
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(cfg: ModelConfig, model_dir: str | Path | None = None, trainable: bool = True) -> PreTrainedModel:
    """Policy (trainable=True, LoRA applied when enabled) or frozen reference."""
    path = Path(model_dir) if model_dir else resolve_model_path(cfg.path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(cfg.dtype), trust_remote_code=cfg.trust_remote_code
    )
    if not trainable:
        return model.eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return apply_lora(model, cfg.lora, task="causal_lm")


def load_reward_model(
    cfg: RewardModelConfig, model_dir: str | Path | None = None, trainable: bool = False
) -> ScalarHeadModel:
    """Reward model: a trained scalar-head dir, or a fresh head on cfg.path's backbone."""
    path = Path(model_dir) if model_dir else resolve_model_path(cfg.path)
    model = ScalarHeadModel.from_pretrained(
        path, dtype=torch_dtype(cfg.dtype), pooling=cfg.pooling, trust_remote_code=cfg.trust_remote_code
    )
    if not trainable:
        return model.eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    return apply_lora(model, cfg.lora, task="scalar_head")


def load_critic(cfg: CriticConfig, init_dir: str | Path, dtype: str = "float32") -> ScalarHeadModel:
    """Critic (value head) initialised from the reward model or the policy dir.

    critic.gradient_checkpointing recomputes the backbone's layers in backward: a 8B critic on
    2048-token sequences keeps ~0.8 GiB of activations per micro-batch instead of ~10 GiB."""
    model = ScalarHeadModel.from_pretrained(init_dir, dtype=torch_dtype(dtype), pooling="last")
    if cfg.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable()
    return apply_lora(model, cfg.lora, task="scalar_head")
