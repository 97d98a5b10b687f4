"""LoRA through peft for the policy, reward model and critic; merge-and-export."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from rlhf_dist.config.schema_parts import LoRAConfig


def _peft_config(cfg: LoRAConfig, task_type: str | None) -> LoraConfig:
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type=task_type,
    )


def apply_lora(model: nn.Module, cfg: LoRAConfig, task: Literal["causal_lm", "scalar_head"]) -> nn.Module:
    """Wrap with LoRA adapters when cfg.enabled (base weights frozen); else return model unchanged.

    For a scalar-head model only the backbone gets adapters; the head stays fully trainable.
    """
    if not cfg.enabled:
        return model
    if task == "causal_lm":
        return get_peft_model(model, _peft_config(cfg, "CAUSAL_LM"))
    model.backbone = get_peft_model(model.backbone, _peft_config(cfg, None))
    model.head.requires_grad_(True)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights; plain modules come back unchanged."""
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, PeftModel):
        model.backbone = backbone.merge_and_unload()
    return model


def export_merged(model: nn.Module, out_dir: str | Path, tokenizer=None) -> Path:
    """Merge LoRA (if any) and save a plain HF dir that transformers and vLLM load directly."""
    merged = merge_lora(model)
    out = Path(out_dir)
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
