"""A backbone with a linear scalar head: the reward model and the critic.

One scalar per token (`token_scores`, [B, T]); the reward model pools it to one score per
sequence (last valid token by default, or mean), the critic uses it per token as V(s_t).
Any Hugging Face backbone works (decoder or encoder), loaded with AutoModel.

On disk (an ordinary HF dir plus two small files):
    config.json, model.safetensors, tokenizer files   the backbone (AutoModel loads it)
    score_head.safetensors                            head weight [1, H] and bias [1]
    scalar_head.json                                  {"format": ..., "pooling": "last"|"mean"}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedModel

from rlhf_dist.algo.kl import last_valid_index

HEAD_WEIGHTS = "score_head.safetensors"
HEAD_META = "scalar_head.json"
HEAD_FORMAT = "rlhf-dist-scalar-head/v1"
Pooling = Literal["last", "mean"]


def pool_scores(token_scores: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, T] per-token scores -> [B] sequence scores."""
    if pooling == "last":
        idx, _ = last_valid_index(attention_mask)
        idx = idx.clamp(min=0)  # an all-padding row reads position 0 rather than failing
        return token_scores.gather(1, idx.unsqueeze(1)).squeeze(1)
    mask = attention_mask.to(token_scores.dtype)
    return (token_scores * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, T, H] hidden states -> [B, H], pooled as pool_scores pools per-token scores."""
    if pooling == "last":
        idx, _ = last_valid_index(attention_mask)
        return hidden[torch.arange(hidden.shape[0]), idx.clamp(min=0)]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class ScalarHeadModel(nn.Module):
    """Backbone + Linear(hidden, 1)."""

    def __init__(self, backbone: PreTrainedModel, pooling: Pooling = "last"):
        super().__init__()
        self.backbone = backbone
        self.pooling: Pooling = pooling
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=backbone.dtype)
        # Small init keeps initial rewards/values near 0, so early PPO steps are tame.
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def token_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B, T] -> scores [B, T] (float32)."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        ).last_hidden_state  # [B, T, H]
        return self.head(hidden).squeeze(-1).float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, per_token: bool = False) -> torch.Tensor:
        """Sequence scores [B], or per-token scores [B, T] with per_token=True (the critic's values).

        Going through forward (not token_scores) matters under DeepSpeed, whose hooks wrap forward.
        """
        scores = self.token_scores(input_ids, attention_mask)
        return scores if per_token else pool_scores(scores, attention_mask, self.pooling)

    def save_pretrained(self, out_dir: str | Path, tokenizer=None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out)
        head_state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
        save_file(head_state, out / HEAD_WEIGHTS)
        (out / HEAD_META).write_text(json.dumps({"format": HEAD_FORMAT, "pooling": self.pooling}, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        return out

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        dtype: torch.dtype = torch.float32,
        pooling: Pooling | None = None,
        trust_remote_code: bool = False,
    ) -> "ScalarHeadModel":
        """Load a saved scalar-head model, or put a fresh head on any HF backbone dir."""
        model_dir = Path(model_dir)
        backbone = AutoModel.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
        meta_file = model_dir / HEAD_META
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if meta and meta.get("format") != HEAD_FORMAT:
            raise ValueError(f"{meta_file}: unknown scalar head format {meta.get('format')!r}")
        model = cls(backbone, pooling=pooling or meta.get("pooling", "last"))
        if (model_dir / HEAD_WEIGHTS).is_file():
            model.head.load_state_dict(load_file(model_dir / HEAD_WEIGHTS))
            model.head.to(dtype)
        return model
