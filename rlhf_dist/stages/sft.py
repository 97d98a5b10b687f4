"""Stage 1: supervised fine-tuning (`rlhf-dist sft`).

Cross-entropy on response tokens only (prompt and padding labels are -100), DeepSpeed or
torch engine, LoRA optional (merged at export). Held-out perplexity after each epoch;
the result is a plain HF dir at <run>/sft that PPO, vLLM and transformers load directly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf_dist.config import RLHFConfig
from rlhf_dist.data import collate_sft
from rlhf_dist.models import load_causal_lm, load_tokenizer, merge_lora, resolve_model_path
from rlhf_dist.storage import localize, push_outputs
from rlhf_dist.utils import prepare_run_dir, seed_everything, write_json
from rlhf_dist.data.files import load_encoded_sft, resolve_data_files
from rlhf_dist.backends.train.factory import build_train_engine
from rlhf_dist.stages.loop import train_epochs, updates_per_epoch
from rlhf_dist.tracking import MetricsLogger

log = logging.getLogger(__name__)


@dataclass
class SFTResult:
    model_dir: Path
    history: list[dict] = field(default_factory=list)


def _response_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed NLL over response tokens and their count (labels -100 elsewhere)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits[:, :-1].float()  # [B, L-1, V] predicts tokens 1..L-1
    labels = batch["labels"][:, 1:]  # [B, L-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    return nll, int((labels != -100).sum())


def _sft_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    nll, n_tokens = _response_nll(model, batch)
    return nll / max(n_tokens, 1), {"response_tokens": float(n_tokens)}


@torch.no_grad()
def response_perplexity(model, examples: list, pad_id: int, batch_size: int = 16) -> float:
    """exp(mean NLL per response token) over the examples."""
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        nll, n = _response_nll(model, collate_sft(examples[i : i + batch_size], pad_id))
        total, count = total + float(nll), count + n
    return math.exp(total / max(count, 1))


def _encode(cfg: RLHFConfig, tokenizer, path: Path, what: str) -> list:
    return load_encoded_sft(cfg, tokenizer, path, what)  # every bad row with file:line, <run>/rejected_rows.jsonl


def train_sft(cfg: RLHFConfig) -> SFTResult:
    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    seed_everything(cfg.run.seed)
    files = resolve_data_files(cfg)
    model_dir = resolve_model_path(cfg.policy.path, seed=cfg.run.seed)
    tokenizer = load_tokenizer(model_dir, cfg.policy.trust_remote_code)
    examples = _encode(cfg, tokenizer, files.sft, "sft data")
    n_eval = max(1, len(examples) // 10)  # a held-out tenth for perplexity
    train_set, eval_set = examples[n_eval:], examples[:n_eval]
    tcfg, epochs, pad_id = cfg.sft.train, cfg.sft.epochs, tokenizer.pad_token_id
    total_updates = updates_per_epoch(len(train_set), tcfg, "SFT examples", "sft.train.global_batch_size") * epochs
    run_dir = prepare_run_dir(cfg)  # config.yaml only once the data is known to be usable
    model = load_causal_lm(cfg.policy, model_dir, trainable=True)
    engine = build_train_engine(model, tcfg, total_updates, cfg.policy.dtype)  # this process alone
    result = SFTResult(model_dir=run_dir / "sft")
    n_micro = total_updates * tcfg.global_batch_size // tcfg.micro_batch_size
    with MetricsLogger(run_dir, cfg.tracking, total=n_micro, desc="sft") as tracker:
        before = response_perplexity(model, eval_set, pad_id)
        tracker.print(f"sft: held-out response perplexity before training {before:.3f}")
        result.history = train_epochs(
            engine, train_set, lambda b: collate_sft(b, pad_id), _sft_loss,
            lambda m: {"perplexity": response_perplexity(m, eval_set, pad_id)}, tcfg, epochs, tracker, "sft",
            cfg.run.seed,
        )
    plain = merge_lora(getattr(engine, "module", engine.model))
    plain.save_pretrained(result.model_dir)
    tokenizer.save_pretrained(result.model_dir)
    write_json(run_dir / "sft_metrics.json", {"perplexity_before": before, "history": result.history})
    log.info("SFT model saved to %s", result.model_dir)
    push_outputs(run_dir)
    return result
