"""Policy, reference, reward model and critic construction; LoRA; built-in offline models."""

from rlhf_dist.models.builtin import resolve_model_path
from rlhf_dist.models.loading import load_causal_lm, load_critic, load_reward_model, load_tokenizer, torch_dtype
from rlhf_dist.models.lora import apply_lora, export_merged, merge_lora
from rlhf_dist.models.scalar_head import ScalarHeadModel, pool_scores
from rlhf_dist.models.tiny import build_byte_tokenizer, make_tiny_model_dir, tiny_config

__all__ = [
    "ScalarHeadModel", "apply_lora", "build_byte_tokenizer", "export_merged", "load_causal_lm",
    "load_critic", "load_reward_model", "load_tokenizer", "make_tiny_model_dir", "merge_lora", "pool_scores",
    "resolve_model_path", "tiny_config", "torch_dtype",
]
