"""Stage 2: Bradley-Terry reward model.

    rlhf-dist rm --config configs/tiny.yaml

Reads preferences in any supported format (pairs, A/B feedback with ties and confidence,
ranked lists, ratings), trains a scalar-head model with the BT loss, evaluates held-out
accuracy / Kendall's tau / margin / calibration after every epoch, and saves an HF dir
to <run>/reward_model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf_dist.algo import bradley_terry_loss, calibration, kendall_tau, pairwise_accuracy, reward_margin_stats
from rlhf_dist.backends.train import TrainEngine
from rlhf_dist.config import RLHFConfig
from rlhf_dist.data import collate_pairs
from rlhf_dist.data.files import load_encoded_pairs
from rlhf_dist.models import ScalarHeadModel, load_reward_model, load_tokenizer, resolve_model_path
from rlhf_dist.storage import localize, push_outputs
from rlhf_dist.utils import prepare_run_dir, seed_everything, write_json
from rlhf_dist.data.files import resolve_data_files
from rlhf_dist.backends.train.factory import build_train_engine
from rlhf_dist.stages.loop import train_epochs, updates_per_epoch
from rlhf_dist.tracking import MetricsLogger

log = logging.getLogger(__name__)


@dataclass
class RewardTrainResult:
    model_dir: Path
    history: list[dict] = field(default_factory=list)  # one eval dict per epoch

    @property
    def final_metrics(self) -> dict:
        return self.history[-1] if self.history else {}


def score_pairs(model: ScalarHeadModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over chosen+rejected stacked (one pass, shared padding) -> ([B], [B])."""
    n = batch["chosen_input_ids"].shape[0]
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    ids = torch.cat([pad(batch["chosen_input_ids"]), pad(batch["rejected_input_ids"])])  # [2B, L]
    mask = torch.cat([pad(batch["chosen_attention_mask"]), pad(batch["rejected_attention_mask"])])
    scores = model(ids, mask)  # [2B]
    return scores[:n], scores[n:]


@torch.no_grad()
def evaluate_reward_model(model: ScalarHeadModel, examples: list, pad_id: int, batch_size: int = 32) -> dict:
    """Held-out accuracy, Kendall's tau (over each pair as a 2-item ranking), margin and ECE.

    Labels may be ties (target 0.5): `accuracy` is tie-aware (algo.pairwise_accuracy: a tie pair
    counts 0.5 whichever side scores higher, never as a loss of chosen); tau, margin and ECE are
    over the decisive pairs (target != 0.5), `accuracy_decisive` too, and `tie_abs_margin` is the
    mean |s_a - s_b| on the tie pairs (smaller: the model sees them as equal)."""
    model.eval()
    chosen, rejected, targets = [], [], []
    for i in range(0, len(examples), batch_size):
        batch = collate_pairs(examples[i : i + batch_size], pad_id)
        c, r = score_pairs(model, batch)
        chosen.append(c)
        rejected.append(r)
        targets.append(batch["target"])
    c, r, t = torch.cat(chosen), torch.cat(rejected), torch.cat(targets)
    model.train()
    tie = t == 0.5
    decisive = ~tie if bool((~tie).any()) else torch.ones_like(tie)  # all ties: the rest over every pair
    # orient each decisive pair so that its first item is the one the label prefers
    a = torch.where(t >= 0.5, c, r)[decisive]
    b = torch.where(t >= 0.5, r, c)[decisive]
    taus = [kendall_tau([float(x), float(y)], [0, 1]) for x, y in zip(a, b)]
    margin, cal = reward_margin_stats(a, b), calibration(a, b)
    return {
        "accuracy": pairwise_accuracy(c, r, t),
        "accuracy_decisive": pairwise_accuracy(a, b),
        "kendall_tau": sum(taus) / len(taus),
        "margin_mean": float(margin["mean"]),
        "margin_std": float(margin["std"]),
        "ece": float(cal["ece"]),
        "n_pairs": len(examples),
        "n_tie_pairs": int(tie.sum()),
        "tie_abs_margin": float((c - r)[tie].abs().mean()) if bool(tie.any()) else 0.0,
    }


def _bt_loss(model: ScalarHeadModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    chosen, rejected = score_pairs(model, batch)
    loss = bradley_terry_loss(chosen, rejected, batch["target"], batch["weight"])
    return loss, {"accuracy": pairwise_accuracy(chosen, rejected, batch["target"])}


def train_reward_model(cfg: RLHFConfig, init_dir: str | Path | None = None) -> RewardTrainResult:
    """Train, evaluate every epoch, save to <run>/reward_model; returns per-epoch eval metrics."""
    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    seed_everything(cfg.run.seed)
    files = resolve_data_files(cfg)
    model_dir = Path(init_dir) if init_dir else resolve_model_path(cfg.reward_model.path, seed=cfg.run.seed)
    tokenizer = load_tokenizer(model_dir, cfg.reward_model.trust_remote_code)
    train_set = load_encoded_pairs(cfg, tokenizer, files.pairs, files.pairs_format, "train pairs")
    eval_set = load_encoded_pairs(cfg, tokenizer, files.eval_pairs, files.eval_pairs_format, "eval pairs")
    tcfg, epochs, pad_id = cfg.reward.train, cfg.reward.epochs, tokenizer.pad_token_id
    total_updates = updates_per_epoch(len(train_set), tcfg, "training pairs", "reward.train.global_batch_size") * epochs
    run_dir = prepare_run_dir(cfg)  # config.yaml only once the data is known to be usable
    model = load_reward_model(cfg.reward_model, model_dir, trainable=True)
    engine = build_train_engine(model, tcfg, total_updates, cfg.reward_model.dtype)  # this process alone
    result = RewardTrainResult(model_dir=run_dir / "reward_model")
    n_micro = total_updates * tcfg.global_batch_size // tcfg.micro_batch_size
    with MetricsLogger(run_dir, cfg.tracking, total=n_micro, desc="reward model") as tracker:
        result.history = train_epochs(
            engine, train_set, lambda b: collate_pairs(b, pad_id), _bt_loss,
            lambda m: evaluate_reward_model(m, eval_set, pad_id), tcfg, epochs, tracker, "rm", cfg.run.seed,
        )
    _unwrap(engine).save_pretrained(result.model_dir, tokenizer=tokenizer)
    write_json(run_dir / "reward_metrics.json", {"history": result.history, "skipped_updates": engine.skipped_updates})
    log.info("reward model saved to %s", result.model_dir)
    push_outputs(run_dir)
    return result


def _unwrap(engine: TrainEngine) -> torch.nn.Module:
    """The plain module (DeepSpeed wraps it); LoRA merged so the output is a plain HF dir."""
    from rlhf_dist.models import merge_lora

    return merge_lora(getattr(engine, "module", engine.model))
