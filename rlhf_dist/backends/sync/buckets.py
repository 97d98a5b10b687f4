"""Which tensors travel together in one weight-sync bucket. Pure: names, shapes and dtypes only.

A bucket holds whole decoder layers (q/k/v, gate/up, a LoRA adapter's A and B with their base weight),
so an engine can load it the moment it arrives and a LoRA merge never needs a tensor from another
bucket. The plan is computed on every policy rank from metadata alone (ZeRO-3 shapes come from
`ds_shape`), so the ranks can gather bucket i together without first gathering the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch inside dtype_of only: the config schema imports the transports, which import this
    import torch

LORA_PARTS = (".lora_A.", ".lora_B.")


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # e.g. "torch.bfloat16"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * dtype_of(self.dtype).itemsize


@dataclass
class Bucket:
    sources: list[str] = field(default_factory=list)  # trainer parameter names to gather (LoRA A/B included)
    tensors: list[TensorMeta] = field(default_factory=list)  # what is sent: HF names (LoRA merged)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def dtype_of(name: str) -> torch.dtype:
    import torch

    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype


def layer_of(name: str) -> str:
    """'model.layers.3.mlp.up_proj.weight' -> 'model.layers.3'; non-layer names are their own group."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h", "blocks", "layer") and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2])
    return name


def hf_name(name: str) -> str:
    """A peft-wrapped parameter's name in the plain model: 'base_model.model.x.base_layer.weight' -> 'x.weight'."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def _layer_groups(params: list[TensorMeta], dropped: frozenset[str]) -> list[Bucket]:
    """Consecutive parameters of one layer (or one non-layer tensor) as a group, in model order."""
    groups: list[Bucket] = []
    layer = None
    for meta in params:
        plain = hf_name(meta.name)
        if plain in dropped:
            continue
        if layer_of(plain) != layer or not groups:
            groups.append(Bucket())
            layer = layer_of(plain)
        groups[-1].sources.append(meta.name)
        if not any(part in meta.name for part in LORA_PARTS):
            groups[-1].tensors.append(TensorMeta(plain, meta.dtype, meta.shape))
    return groups


def plan_buckets(params: list[TensorMeta], limit_bytes: int, dropped: frozenset[str] = frozenset()) -> list[Bucket]:
    """Pack whole layers, in model order, into buckets that send at most limit_bytes each.

    So a bucket is at most max(limit_bytes, the largest layer). LoRA A/B are gathered with their layer
    but not sent (they are folded into the base weight). `dropped` HF names are gathered nowhere and
    sent nowhere (a tied lm_head: engines re-tie it to the embedding).
    """
    buckets: list[Bucket] = []
    for group in _layer_groups(params, dropped):
        if buckets and buckets[-1].nbytes + group.nbytes <= limit_bytes:
            buckets[-1].sources += group.sources
            buckets[-1].tensors += group.tensors
        else:
            buckets.append(group)
    return buckets
