"""Stage 1: supervised fine-tuning (`rlhf-dist sft`).

Cross-entropy on response tokens only (prompt and padding labels are -100), LoRA optional (merged at
export). Trains on the policy's Ray + DeepSpeed group (cluster.policy; driver/supervised.py), or in
this process for a one-process CPU run (`sft.train.backend torch`, config/topology.py trains_in_driver).
Held-out perplexity after each epoch; the result is a plain HF dir at <run>/sft that PPO, vLLM and
transformers load directly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import trains_in_driver
from rlhf_dist.data import collate_sft
from rlhf_dist.data.files import load_encoded_sft, read_splits, resolve_data_files
from rlhf_dist.models import load_causal_lm, load_tokenizer, merge_lora, resolve_model_path
from rlhf_dist.models.objectives import response_nll, sft_loss
from rlhf_dist.models.shards import share_weights
from rlhf_dist.stages.inputs import check_cluster
from rlhf_dist.stages.loop import train_epochs, updates_per_epoch
from rlhf_dist.storage import localize, push_outputs
from rlhf_dist.tracking import MetricsLogger
from rlhf_dist.utils import prepare_run_dir, seed_everything, write_json

log = logging.getLogger(__name__)


@dataclass
class SFTResult:
    model_dir: Path
    history: list[dict] = field(default_factory=list)


def perplexity(nll_and_counts: list[tuple[float, int]]) -> float:
    """exp(mean NLL per response token) from (summed NLL, token count) per batch."""
    total, count = sum(n for n, _ in nll_and_counts), sum(c for _, c in nll_and_counts)
    return math.exp(total / max(count, 1))


@torch.no_grad()
def response_perplexity(model, examples: list, pad_id: int, batch_size: int = 16) -> float:
    """exp(mean NLL per response token) over the examples."""
    parts = []
    for i in range(0, len(examples), batch_size):
        nll, n = response_nll(model, collate_sft(examples[i : i + batch_size], pad_id))
        parts.append((float(nll), n))
    return perplexity(parts)


def train_sft(cfg: RLHFConfig) -> SFTResult:
    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    seed_everything(cfg.run.seed)
    model_dir = resolve_model_path(cfg.policy.path, seed=cfg.run.seed, option="policy.path")  # before any write
    files = resolve_data_files(cfg)
    tokenizer = load_tokenizer(model_dir, cfg.policy.trust_remote_code)
    # every bad row with file:line, <run>/rejected_rows.jsonl
    examples = read_splits(files, {"sft": lambda path: load_encoded_sft(cfg, tokenizer, path, "sft data")})["sft"]
    n_eval = max(1, len(examples) // 10)  # a held-out tenth for perplexity
    train_set, eval_set = examples[n_eval:], examples[:n_eval]
    tcfg, epochs = cfg.sft.train, cfg.sft.epochs
    total_updates = updates_per_epoch(len(train_set), tcfg, "SFT examples", "sft.train.global_batch_size") * epochs
    if not trains_in_driver(cfg, tcfg):
        check_cluster(cfg)  # the Ray cluster it trains on: reachable, with this shell's token
    run_dir = prepare_run_dir(cfg)  # config.yaml only once the data is known to be usable
    result = SFTResult(model_dir=run_dir / "sft")
    n_micro = total_updates * tcfg.global_batch_size // tcfg.micro_batch_size
    with MetricsLogger(run_dir, cfg.tracking, total=n_micro, desc="sft") as tracker:
        if trains_in_driver(cfg, tcfg):
            before, result.history = _train_here(cfg, model_dir, train_set, eval_set, tokenizer, tracker,
                                                 total_updates, result.model_dir)
        else:
            from rlhf_dist.driver.supervised import SupervisedStage, train_on_group

            stage = SupervisedStage("sft", tcfg, epochs, model_dir, result.model_dir, train_set, eval_set,
                                    tokenizer.pad_token_id, lambda parts: {"perplexity": perplexity(parts)},
                                    eval_before=True)
            outcome = train_on_group(cfg, stage, tracker)
            before, result.history = outcome.before["perplexity"], outcome.history
    write_json(run_dir / "sft_metrics.json", {"perplexity_before": before, "history": result.history})
    log.info("SFT model saved to %s", result.model_dir)
    push_outputs(run_dir)
    return result


def _train_here(cfg: RLHFConfig, model_dir: Path, train_set: list, eval_set: list, tokenizer,
                tracker: MetricsLogger, total_updates: int, out_dir: Path) -> tuple[float, list[dict]]:
    """The one-process run: train in this process, export to out_dir. Returns (perplexity before, history)."""
    from rlhf_dist.backends.train.factory import build_train_engine

    tcfg, pad_id = cfg.sft.train, tokenizer.pad_token_id
    model = load_causal_lm(cfg.policy, model_dir, trainable=True)
    engine = build_train_engine(model, tcfg, total_updates, cfg.policy.dtype)  # this process alone
    before = response_perplexity(model, eval_set, pad_id)
    tracker.print(f"sft: held-out response perplexity before training {before:.3f}")
    history = train_epochs(
        engine, train_set, lambda b: collate_sft(b, pad_id), sft_loss,
        lambda m: {"perplexity": response_perplexity(m, eval_set, pad_id)}, tcfg, cfg.sft.epochs, tracker, "sft",
        cfg.run.seed,
    )
    merge_lora(engine.module).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    share_weights(out_dir)
    return before, history
