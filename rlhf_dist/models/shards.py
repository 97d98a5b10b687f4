"""Write a model dir piece by piece: weights as Hugging Face's sharded safetensors, config without weights.

    writer = ShardWriter(out_dir)
    for bucket in buckets:                # e.g. one gathered bucket of whole layers at a time (ZeRO-3)
        writer.write(tensors_of(bucket))  # copied to host memory, written, and let go
    writer.close()                        # model-0000k-of-0000n.safetensors + model.safetensors.index.json
    save_config_files(model, out_dir)     # config.json, generation_config.json (no weights touched)

The result is what `save_pretrained` writes (HF's shard and index names, safetensors metadata format "pt"), so
transformers' from_pretrained and vLLM load it; a single shard is named model.safetensors, without an index.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread, for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def share_weights(out_dir: str | Path) -> None:
    """Give every safetensors file in an exported dir the mode any other file there has (0o666 & ~umask).

    safetensors 0.8 creates its files 0600, so an exported model was unreadable by the other users of a shared
    run dir (a cluster's /shared, the host user of a Docker volume) while its config.json was readable."""
    mode = 0o666 & ~_umask()
    for weights in Path(out_dir).glob("*.safetensors"):
        os.chmod(weights, mode)
_PARTIAL = "model-part-{:05d}.safetensors"  # until close() knows how many shards there are
_SHARD = "model-{:05d}-of-{:05d}.safetensors"


class ShardWriter:
    """One safetensors shard per `write`; nothing is kept between writes but the names written."""

    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in [*self.out.glob("model-*.safetensors"), self.out / SINGLE_FILE, self.out / INDEX_FILE]:
            stale.unlink(missing_ok=True)  # a previous export's shards would mix with these
        self.parts: list[list[str]] = []  # tensor names of each written shard
        self.total_size = 0

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write these tensors as the next shard (an empty dict writes nothing)."""
        if not tensors:
            return
        seen = {name for part in self.parts for name in part}
        if repeated := sorted(seen & tensors.keys()):
            raise ValueError(f"ShardWriter: tensors written twice: {repeated[:3]}")
        # An own host copy of each tensor: gathered ZeRO-3 weights are views of one flat buffer (which
        # safetensors refuses as shared memory) and may live on an accelerator.
        host = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
        save_file(host, self.out / _PARTIAL.format(len(self.parts) + 1), metadata={"format": "pt"})
        self.parts.append(list(host))
        self.total_size += sum(t.numel() * t.element_size() for t in host.values())

    def close(self) -> list[Path]:
        """Give the shards their final names (and write the index when there are several). Returns the files."""
        if not self.parts:
            raise ValueError(f"ShardWriter: no weights were written to {self.out}")
        count = len(self.parts)
        names = [SINGLE_FILE] if count == 1 else [_SHARD.format(i + 1, count) for i in range(count)]
        for i, name in enumerate(names):
            (self.out / _PARTIAL.format(i + 1)).rename(self.out / name)
        if count > 1:
            weight_map = {tensor: name for name, part in zip(names, self.parts) for tensor in part}
            index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        share_weights(self.out)
        return [self.out / name for name in names]


def save_config_files(model: nn.Module, out_dir: str | Path) -> None:
    """config.json (architectures and dtype as save_pretrained sets them), generation_config.json where the model
    generates, and a remote-code model's code files. Reads metadata only: works on a ZeRO-3 partitioned model."""
    from transformers.dynamic_module_utils import custom_object_save

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper's model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(base.config)  # the live model's config stays as it is
    config.dtype = str(base.dtype).split(".")[1]
    config.architectures = [type(base).__name__]
    if base.is_remote_code():
        custom_object_save(base, out, config=config)
    config.save_pretrained(out)
    if base.can_generate():
        base.generation_config.save_pretrained(out)
