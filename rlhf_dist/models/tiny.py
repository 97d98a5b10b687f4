"""Tiny config-built models and a byte-level tokenizer: real transformers models, no download.

Used by tests, the CI pipeline and the tiny preset. Weights are random (seeded) but the
directories are ordinary Hugging Face model dirs that transformers and vLLM load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedTokenizerFast, Qwen2Config

from rlhf_dist.models.builtin import tiny_config_fields

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
# A minimal chat template so the chat-template code path runs on tiny models too.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_byte_tokenizer(chat_template: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 3 special tokens + 256 byte symbols (ids 3..258), no merges."""
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda s: ord(s))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for symbol in byte_symbols:
        vocab[symbol] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", padding_side="right"
    )
    if chat_template:
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_config(arch: str = "llama", vocab_size: int = 259, hidden: int = 64, layers: int = 2) -> PretrainedConfig:
    """A small decoder config (fp32) with the byte tokenizer's special token ids (models/builtin.py's fields)."""
    fields = tiny_config_fields(arch, vocab_size, hidden, layers)
    del fields["model_type"]  # the config class sets it
    return (LlamaConfig if arch == "llama" else Qwen2Config)(**fields)


def make_tiny_model_dir(out_dir: str | Path, arch: str = "llama", seed: int = 0, hidden: int = 64) -> Path:
    """Write a seeded tiny causal LM + byte tokenizer as a Hugging Face model dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, hidden=hidden))
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out)
    build_byte_tokenizer(chat_template=False).save_pretrained(out)
    return out
