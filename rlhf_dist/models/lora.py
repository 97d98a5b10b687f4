"""LoRA through peft for the policy, reward model and critic; merge-and-export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from rlhf_dist.config.schema_parts import LoRAConfig
from rlhf_dist.models.shards import share_weights

if TYPE_CHECKING:
    from peft import LoraConfig


def _peft_config(cfg: LoRAConfig, task_type: str | None) -> LoraConfig:
    from peft import LoraConfig

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
    from peft import get_peft_model  # here, not at import: every actor imports this module, few need peft

    if task == "causal_lm":
        return get_peft_model(model, _peft_config(cfg, "CAUSAL_LM"))
    model.backbone = get_peft_model(model.backbone, _peft_config(cfg, None))
    model.head.requires_grad_(True)
    return model


def is_peft_model(module: object) -> bool:
    """A peft-wrapped module? Without peft imported none can be (apply_lora imports it), so none is imported."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights; plain modules come back unchanged."""
    if is_peft_model(model):
        return model.merge_and_unload()
    backbone = getattr(model, "backbone", None)
    if is_peft_model(backbone):
        model.backbone = backbone.merge_and_unload()
    return model


def export_merged(model: nn.Module, out_dir: str | Path, tokenizer=None) -> Path:
    """Merge LoRA (if any) and save a plain HF dir that transformers and vLLM load directly."""
    merged = merge_lora(model)
    out = Path(out_dir)
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    share_weights(out)
    return out


def merged_state_dict(peft_state: dict[str, torch.Tensor], cfg: LoRAConfig) -> dict[str, torch.Tensor]:
    """A peft model's full state dict -> plain HF names with W + (B @ A) * alpha / r folded in.

    Works on gathered tensors alone (no module), so it serves ZeRO-sharded policies and the
    weight sync to rollout engines, which only know the base model's parameter names.
    """
    scale = cfg.alpha / cfg.r
    out: dict[str, torch.Tensor] = {}
    for name, tensor in peft_state.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        prefix = name.removesuffix(".weight").removesuffix(".base_layer")
        a_name, b_name = f"{prefix}.lora_A.default.weight", f"{prefix}.lora_B.default.weight"
        if name.endswith(".base_layer.weight") and a_name in peft_state:
            delta = (peft_state[b_name].float() @ peft_state[a_name].float()) * scale
            tensor = (tensor.float() + delta).to(tensor.dtype)
        out[plain] = tensor
    return out


def adapter_for_serving(model: nn.Module, lora_params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """A peft model's LoRA parameters (module state-dict names) -> what vLLM / peft load from an adapter dir.

    Returns (tensors named as save_pretrained writes them, e.g. 'base_model.model.model.layers.0.self_attn.
    q_proj.lora_A.weight'; the LoraConfig as a JSON-safe dict). lora_params may be gathered copies (ZeRO-3):
    the model's own parameters are not read.
    """
    if not is_peft_model(model):
        raise ValueError(f"adapter_for_serving needs a peft model (policy.lora.enabled), got {type(model).__name__}")
    from peft import get_peft_model_state_dict

    # Embeddings are never resized here: skip peft's check, which re-reads the base config from disk.
    tensors = get_peft_model_state_dict(model, state_dict=lora_params, save_embedding_layers=False)
    config = model.peft_config["default"].to_dict()
    # As peft's save_pretrained does: sets (resolved target_modules) become lists, for JSON.
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    return tensors, json.loads(json.dumps(config))
