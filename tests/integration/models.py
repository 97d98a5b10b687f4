"""Tiny model dirs the integration tests build from config (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_dist.models.tiny import build_byte_tokenizer, tiny_config


def make_tied_tiny_llama(out: Path, seed: int) -> Path:
    """A seeded tiny Llama (hidden 128) whose lm_head is tied to the embedding, + byte tokenizer."""
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama", hidden=128)
    config.tie_word_embeddings = True
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    build_byte_tokenizer().save_pretrained(out)
    return out
