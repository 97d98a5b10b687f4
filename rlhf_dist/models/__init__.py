"""Policy, reference, reward model and critic construction; LoRA; built-in offline models.

The names load on first use (PEP 562): most submodules import torch and transformers, which commands that
only read a config (`rlhf-dist plan`, `config validate`) must not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and linters; at run time __getattr__ below imports them
    from rlhf_dist.models.builtin import resolve_model_path
    from rlhf_dist.models.loading import load_causal_lm, load_critic, load_reward_model, load_tokenizer, torch_dtype
    from rlhf_dist.models.lora import apply_lora, export_merged, merge_lora
    from rlhf_dist.models.scalar_head import ScalarHeadModel, pool_scores
    from rlhf_dist.models.tiny import build_byte_tokenizer, make_tiny_model_dir, tiny_config

_SUBMODULE = {
    "resolve_model_path": "builtin",
    **dict.fromkeys(("load_causal_lm", "load_critic", "load_reward_model", "load_tokenizer", "torch_dtype"),
                    "loading"),
    **dict.fromkeys(("apply_lora", "export_merged", "merge_lora"), "lora"),
    **dict.fromkeys(("ScalarHeadModel", "pool_scores"), "scalar_head"),
    **dict.fromkeys(("build_byte_tokenizer", "make_tiny_model_dir", "tiny_config"), "tiny"),
}

__all__ = [
    "ScalarHeadModel", "apply_lora", "build_byte_tokenizer", "export_merged", "load_causal_lm",
    "load_critic", "load_reward_model", "load_tokenizer", "make_tiny_model_dir", "merge_lora", "pool_scores",
    "resolve_model_path", "tiny_config", "torch_dtype",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULE:
        return getattr(importlib.import_module(f"rlhf_dist.models.{_SUBMODULE[name]}"), name)
    raise AttributeError(f"module 'rlhf_dist.models' has no attribute {name!r}")
