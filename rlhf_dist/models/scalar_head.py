"""A backbone with a linear scalar head: the reward model and the critic.

One scalar per token (`token_scores`, [B, T]); the reward model pools it to one score per
sequence (last valid token by default, or mean), the critic uses it per token as V(s_t).
Any Hugging Face backbone works (decoder or encoder), loaded with AutoModel.

On disk, one of two layouts (scalar_head.json says which; both carry the tokenizer files):

  "hf-sequence-classification" (format v2): decoders whose HF *ForSequenceClassification is
      transformers' GenericForSequenceClassification (Llama, Qwen2/3, Mistral, Gemma, Phi-3, ...)
      with pooling "last" and a bias-free head. An ordinary HF classifier dir: the backbone under
      its base-model prefix plus `score.weight` [1, H], num_labels=1, a pad_token_id that is never
      the eos the score is read on. `AutoModelForSequenceClassification.from_pretrained(dir)`,
      TRL, OpenRLHF and vLLM's classify pooling load it and read the same last-token score.
  "backbone+head" (format v1, the original layout): everything else (encoders, whose HF class
      reads a tanh pooler on [CLS]; pooling "mean"; decoders with their own HF class such as
      GPT-2; a head with a bias). config.json + model.safetensors hold the backbone (AutoModel
      loads it), score_head.safetensors the head weight [1, H] (and bias [1] if any).
      Only ScalarHeadModel.from_pretrained gives our scores.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_layers import GenericForSequenceClassification

from rlhf_dist.algo.kl import last_valid_index

log = logging.getLogger(__name__)

HEAD_WEIGHTS = "score_head.safetensors"
HEAD_META = "scalar_head.json"
HEAD_FORMAT = "rlhf-dist-scalar-head/v1"  # backbone + head files (AutoModel + our head)
HF_FORMAT = "rlhf-dist-scalar-head/v2"  # a plain HF *ForSequenceClassification dir
HF_LAYOUT, OWN_LAYOUT = "hf-sequence-classification", "backbone+head"
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


def hf_sequence_class(config: PretrainedConfig) -> type[PreTrainedModel] | None:
    """The HF classifier class that computes our "last" score exactly, or None.

    GenericForSequenceClassification is `score` (Linear, no bias) on the backbone's last hidden
    state at the rightmost non-pad token: our head and pooling. Encoders' classes pool [CLS]
    through a tanh pooler instead; GPT-2-style classes use absolute positions, so left-padded
    rows would shift. Those keep our own layout.
    """
    try:
        cls = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:  # e.g. a trust_remote_code model without a registered classifier
        return None
    return cls if issubclass(cls, GenericForSequenceClassification) else None


def _as_id_set(ids: int | list[int] | None) -> set[int]:
    if ids is None:
        return set()
    return {ids} if isinstance(ids, int) else set(ids)


def hf_pad_token_id(config: PretrainedConfig, tokenizer=None) -> int | None:
    """A pad id for HF's "rightmost token != pad_token_id" rule that is never an eos.

    Our inputs end with eos; with pad == eos HF would read the token before it. So take the
    tokenizer's pad if it differs from eos, else unk, bos or another special token (never the
    last token of a scored sequence). None when there is none: HF then refuses batches > 1
    (loud) and still scores single sequences and vLLM requests right.
    """
    text = config.get_text_config()
    # The base PretrainedConfig has no token-id attributes; model configs mostly do.
    eos = _as_id_set(getattr(text, "eos_token_id", None))
    if tokenizer is not None:
        eos |= _as_id_set(tokenizer.eos_token_id)
        candidates = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id,
                      *tokenizer.all_special_ids]
    else:
        candidates = [getattr(text, "pad_token_id", None), getattr(text, "bos_token_id", None)]
    return next((c for c in candidates if c is not None and c not in eos), None)


def _read_meta(model_dir: Path) -> dict:
    meta_file = model_dir / HEAD_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if meta and meta.get("format") not in (HEAD_FORMAT, HF_FORMAT):
        raise ValueError(f"{meta_file}: unknown scalar head format {meta.get('format')!r} "
                         f"(known: {HEAD_FORMAT}, {HF_FORMAT})")
    return meta


class ScalarHeadModel(nn.Module):
    """Backbone + Linear(hidden, 1), bias-free like HF's `score`.

    A bias would add the same constant to every score: the Bradley-Terry loss never moves it (it
    depends on score differences only) and the critic learns offsets through the backbone, as
    OpenRLHF's and TRL's value models do. `bias=True` only serves old dirs saved with a non-zero one.
    """

    def __init__(self, backbone: PreTrainedModel, pooling: Pooling = "last", bias: bool = False):
        super().__init__()
        self.backbone = backbone
        self.pooling: Pooling = pooling
        hidden = backbone.config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1, bias=bias, dtype=backbone.dtype)
        if not bias:
            # nn.Linear drew one number for the bias when the head had one: draw it anyway, so the RNG
            # stream after the head (LoRA init, sampling) and with it every seeded run stay as before.
            torch.empty(1, dtype=backbone.dtype).uniform_()
        # Small init keeps initial rewards/values near 0, so early PPO steps are tame.
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        if bias:
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

    def hf_layout_blocker(self) -> str | None:
        """Why this model cannot be saved as a plain HF classifier, or None when it can."""
        if self.pooling != "last":
            return f"pooling '{self.pooling}' (HF's classifier reads the last token only)"
        if self.head.bias is not None:
            return "the head has a bias (HF's `score` has none)"
        if hf_sequence_class(self.backbone.config) is None:
            backbone = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
            return (f"{type(backbone).__name__}'s HF classifier is not GenericForSequenceClassification "
                    "(e.g. an encoder's pooler on [CLS]), so its scores would differ")
        return None

    def save_pretrained(self, out_dir: str | Path, tokenizer=None) -> Path:
        """An HF classifier dir when HF computes the same score (see module doc), else backbone + head."""
        if not isinstance(self.backbone, PreTrainedModel):  # a peft wrapper would save adapters only
            raise ValueError(f"save_pretrained: backbone is a {type(self.backbone).__name__}; "
                             "merge LoRA first (rlhf_dist.models.merge_lora)")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        blocker = self.hf_layout_blocker()
        if blocker is None:
            meta = self._save_hf_layout(out, tokenizer)
        else:
            self.backbone.save_pretrained(out)
            head_state = {k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()}
            save_file(head_state, out / HEAD_WEIGHTS)
            meta = {"format": HEAD_FORMAT, "pooling": self.pooling, "layout": OWN_LAYOUT,
                    "not_hf_because": blocker}
            if tokenizer is not None:
                tokenizer.save_pretrained(out)
        (out / HEAD_META).write_text(json.dumps(meta, indent=2))
        return out

    def _hf_layout_config(self, tokenizer) -> tuple[type[PreTrainedModel], PretrainedConfig, int | None]:
        """The HF classifier class, its config (num_labels 1, a pad id that is never eos) and that pad id."""
        seq_cls = hf_sequence_class(self.backbone.config)
        config = copy.deepcopy(self.backbone.config)  # the live model's config stays as it is
        config.num_labels = 1
        pad_id = hf_pad_token_id(config, tokenizer)
        config.get_text_config().pad_token_id = pad_id
        return seq_cls, config, pad_id

    @staticmethod
    def _save_hf_tokenizer(out: Path, tokenizer, pad_id: int | None) -> None:
        if tokenizer is not None:
            tokenizer = copy.deepcopy(tokenizer)
            if pad_id is not None and tokenizer.pad_token_id != pad_id:
                # HF and TRL pad with the tokenizer's pad token: it must be the id the config names.
                tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
            tokenizer.save_pretrained(out)
        if pad_id is None:
            log.warning("%s: no pad token distinct from eos; HF's classifier will refuse batches > 1", out)

    @staticmethod
    def _hf_meta(seq_cls: type[PreTrainedModel], pad_id: int | None) -> dict:
        return {"format": HF_FORMAT, "pooling": "last", "layout": HF_LAYOUT,
                "hf_class": seq_cls.__name__, "pad_token_id": pad_id}

    def _save_hf_layout(self, out: Path, tokenizer) -> dict:
        """Write backbone + head as `<Arch>ForSequenceClassification` without copying the weights."""
        seq_cls, config, pad_id = self._hf_layout_config(tokenizer)
        with torch.device("meta"):  # an empty shell; its backbone and score are ours
            wrapper = seq_cls(config)
        setattr(wrapper, seq_cls.base_model_prefix, self.backbone)
        wrapper.score = self.head
        wrapper.save_pretrained(out)
        (out / HEAD_WEIGHTS).unlink(missing_ok=True)  # a stale v1 head would contradict score.weight
        self._save_hf_tokenizer(out, tokenizer, pad_id)
        return self._hf_meta(seq_cls, pad_id)

    # ---- a streamed save (ZeRO-3 export, workers/trainers.py): save_pretrained's files without the weights ----
    def saved_weight_prefixes(self) -> tuple[str, str | None]:
        """Where save_pretrained's layout puts the weights: (prefix of the backbone's names in the model files,
        the head's name prefix there), or the head's own file HEAD_WEIGHTS when the second is None."""
        if self.hf_layout_blocker() is None:
            return f"{hf_sequence_class(self.backbone.config).base_model_prefix}.", "score."
        return "", None

    def save_config_files(self, out_dir: str | Path, tokenizer=None) -> dict:
        """Everything save_pretrained writes but the weights (config.json, tokenizer, scalar_head.json), from
        metadata alone (a ZeRO-3 partitioned model works). The weights go where saved_weight_prefixes says:
        the model files (models/shards.py ShardWriter) and, in the backbone+head layout, HEAD_WEIGHTS."""
        from rlhf_dist.models.shards import save_config_files

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        blocker = self.hf_layout_blocker()
        if blocker is None:
            seq_cls, config, pad_id = self._hf_layout_config(tokenizer)
            config.dtype = str(backbone.dtype).split(".")[1]
            config.architectures = [seq_cls.__name__]
            config.save_pretrained(out)
            (out / HEAD_WEIGHTS).unlink(missing_ok=True)
            self._save_hf_tokenizer(out, tokenizer, pad_id)
            meta = self._hf_meta(seq_cls, pad_id)
        else:
            save_config_files(backbone, out)
            if tokenizer is not None:
                tokenizer.save_pretrained(out)
            meta = {"format": HEAD_FORMAT, "pooling": self.pooling, "layout": OWN_LAYOUT, "not_hf_because": blocker}
        (out / HEAD_META).write_text(json.dumps(meta, indent=2))
        return meta

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        dtype: torch.dtype = torch.float32,
        pooling: Pooling | None = None,
        trust_remote_code: bool = False,
    ) -> "ScalarHeadModel":
        """Load a saved scalar-head model (either layout), or put a fresh head on any HF backbone dir."""
        model_dir = Path(model_dir)
        meta = _read_meta(model_dir)
        if meta.get("layout") == HF_LAYOUT:
            return cls._from_hf_layout(model_dir, dtype, pooling or meta["pooling"], trust_remote_code)
        backbone = AutoModel.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
        head_file = model_dir / HEAD_WEIGHTS
        state = load_file(head_file) if head_file.is_file() else {}
        bias = state.pop("bias", None)
        # Old dirs saved a zero bias (BT training never moves it): drop it so they save as HF dirs.
        keep_bias = bias is not None and bool(bias.abs().max() > 0)
        model = cls(backbone, pooling=pooling or meta.get("pooling", "last"), bias=keep_bias)
        if state:
            model.head.load_state_dict({**state, **({"bias": bias} if keep_bias else {})})
            model.head.to(dtype)
        return model

    @classmethod
    def _from_hf_layout(cls, model_dir: Path, dtype: torch.dtype, pooling: Pooling,
                        trust_remote_code: bool) -> "ScalarHeadModel":
        seq = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=dtype, trust_remote_code=trust_remote_code
        )
        model = cls(seq.base_model, pooling=pooling)
        # The classifier's own `score` (Linear, no bias: our head) rather than a copy of its weight: loaded
        # ZeRO-3 partitioned (backends/train/zero_init.py) it holds only this rank's slice, already loaded.
        model.head = seq.score
        return model
