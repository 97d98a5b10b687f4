"""Stage 2: Bradley-Terry reward model.

    rlhf-dist rm --config configs/tiny.yaml

Reads preferences in any supported format (pairs, A/B feedback with ties and confidence,
ranked lists, ratings), trains a scalar-head model with the BT loss on the reward role's Ray +
DeepSpeed group (cluster.reward; driver/supervised.py), or in this process for a one-process CPU run
(`reward.train.backend torch`, config/topology.py trains_in_driver), evaluates held-out accuracy /
Kendall's tau / margin / calibration after every epoch, and saves an HF dir to <run>/reward_model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf_dist.algo import calibration, kendall_tau, pairwise_accuracy, reward_margin_stats
from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import trains_in_driver
from rlhf_dist.data import collate_pairs
from rlhf_dist.data.files import (
    HOLD_OUT_EVERY, DataFiles, hold_out, load_encoded_pairs, read_splits, resolve_data_files,
)
from rlhf_dist.models import ScalarHeadModel, load_reward_model, load_tokenizer, merge_lora, resolve_model_path
from rlhf_dist.models.objectives import bradley_terry_objective, score_pairs
from rlhf_dist.models.shards import share_weights
from rlhf_dist.stages.inputs import check_cluster
from rlhf_dist.stages.loop import train_epochs, updates_per_epoch
from rlhf_dist.storage import localize, push_outputs
from rlhf_dist.tracking import MetricsLogger
from rlhf_dist.utils import prepare_run_dir, seed_everything, write_json

log = logging.getLogger(__name__)


@dataclass
class RewardTrainResult:
    model_dir: Path
    eval_pairs: Path  # the held-out file `history` was measured on (the built-in one under <run>/data if unset)
    eval_pairs_format: str
    history: list[dict] = field(default_factory=list)  # one eval dict per epoch
    eval_held_out: bool = False  # history was measured on data.files.hold_out(eval_pairs' pairs)[1], not all

    @property
    def final_metrics(self) -> dict:
        return self.history[-1] if self.history else {}


@torch.no_grad()
def evaluate_reward_model(model: ScalarHeadModel, examples: list, pad_id: int, batch_size: int = 32) -> dict:
    """Held-out metrics of a reward model in this process (preference_metrics of its scores)."""
    model.eval()
    answers = []
    for i in range(0, len(examples), batch_size):
        batch = collate_pairs(examples[i : i + batch_size], pad_id)
        answers.append((*score_pairs(model, batch), batch["target"]))
    model.train()
    return preference_metrics(answers)


def preference_metrics(answers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict:
    """Held-out accuracy, Kendall's tau (over each pair as a 2-item ranking), margin and ECE, from
    (chosen scores, rejected scores, targets) per batch, in the held-out set's order.

    Labels may be ties (target 0.5): `accuracy` is tie-aware (algo.pairwise_accuracy: a tie pair
    counts 0.5 whichever side scores higher, never as a loss of chosen); tau, margin and ECE are
    over the decisive pairs (target != 0.5), `accuracy_decisive` too, and `tie_abs_margin` is the
    mean |s_a - s_b| on the tie pairs (smaller: the model sees them as equal)."""
    c, r, t = (torch.cat([a[i].float().cpu() for a in answers]) for i in range(3))
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
        "n_pairs": len(t),
        "n_tie_pairs": int(tie.sum()),
        "tie_abs_margin": float((c - r)[tie].abs().mean()) if bool(tie.any()) else 0.0,
    }


def train_reward_model(cfg: RLHFConfig, init_dir: str | Path | None = None) -> RewardTrainResult:
    """Train, evaluate every epoch, save to <run>/reward_model; returns per-epoch eval metrics."""
    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    seed_everything(cfg.run.seed)
    model_dir = (Path(init_dir) if init_dir else  # checked before anything is written
                 resolve_model_path(cfg.reward_model.path, seed=cfg.run.seed, option="reward_model.path"))
    files = resolve_data_files(cfg)
    tokenizer = load_tokenizer(model_dir, cfg.reward_model.trust_remote_code)
    train_set, eval_set, eval_source = _train_and_eval_sets(cfg, files, tokenizer)
    tcfg, epochs = cfg.reward.train, cfg.reward.epochs
    total_updates = updates_per_epoch(len(train_set), tcfg, "training pairs", "reward.train.global_batch_size") * epochs
    if not trains_in_driver(cfg, tcfg):
        check_cluster(cfg)  # the Ray cluster it trains on: reachable, with this shell's token
    run_dir = prepare_run_dir(cfg)  # config.yaml only once the data is known to be usable
    eval_path, eval_format, held_out = eval_source
    result = RewardTrainResult(run_dir / "reward_model", eval_path, eval_format, eval_held_out=held_out)
    n_micro = total_updates * tcfg.global_batch_size // tcfg.micro_batch_size
    with MetricsLogger(run_dir, cfg.tracking, total=n_micro, desc="reward model") as tracker:
        if trains_in_driver(cfg, tcfg):
            result.history, skipped = _train_here(cfg, model_dir, train_set, eval_set, tokenizer, tracker,
                                                  total_updates, result.model_dir)
        else:
            from rlhf_dist.driver.supervised import SupervisedStage, train_on_group

            stage = SupervisedStage("rm", tcfg, epochs, model_dir, result.model_dir, train_set, eval_set,
                                    tokenizer.pad_token_id, preference_metrics)
            outcome = train_on_group(cfg, stage, tracker)
            result.history, skipped = outcome.history, outcome.skipped_updates
    write_json(run_dir / "reward_metrics.json", {"history": result.history, "skipped_updates": skipped})
    log.info("reward model saved to %s", result.model_dir)
    push_outputs(run_dir)
    return result


def _train_and_eval_sets(cfg: RLHFConfig, files: DataFiles, tokenizer, stage: str = "reward"
                         ) -> tuple[list, list, tuple[Path, str, bool]]:
    """(train pairs, held-out pairs, (held-out file, its format, held out of it)), the user's files read
    before any built-in one is written. The user's pairs without data.eval_pairs_path: every 10th of them is
    held out for evaluation (the built-in pairs would say nothing about a model of this data) unless there
    are too few, which a warning then says. `stage`: whose global batch must fit ('reward' or 'dpo', which
    reads the same files: stages/dpo.py)."""
    def read(split: str):
        fmt = files.pairs_format if split == "pairs" else files.eval_pairs_format
        what = "train pairs" if split == "pairs" else "eval pairs"
        return lambda path: load_encoded_pairs(cfg, tokenizer, path, fmt, what)

    if files.is_given("pairs") and not files.is_given("eval_pairs"):
        given = read_splits(files, {"pairs": read("pairs")})["pairs"]
        train, held = hold_out(given)
        gbs = (cfg.dpo if stage == "dpo" else cfg.reward).train.global_batch_size
        if held and len(train) >= gbs:
            log.info("data.eval_pairs_path unset: the %s is evaluated on every %dth of the %d pairs of "
                     "%s (%d held out, not trained on)", "DPO policy" if stage == "dpo" else "reward model",
                     HOLD_OUT_EVERY, len(given), files.pairs, len(held))
            return train, held, (files.pairs, files.pairs_format, True)
        log.warning("data.eval_pairs_path unset and %s has %d usable pairs, too few to hold out every %dth and keep "
                    "one global batch (%s.train.global_batch_size %d): evaluating on the built-in demo pairs, "
                    "which say nothing about this data; set --data.eval_pairs_path", files.pairs, len(given),
                    HOLD_OUT_EVERY, stage, gbs)
        return given, read("eval_pairs")(files.eval_pairs), (files.eval_pairs, files.eval_pairs_format, False)
    sets = read_splits(files, {"pairs": read("pairs"), "eval_pairs": read("eval_pairs")})
    return sets["pairs"], sets["eval_pairs"], (files.eval_pairs, files.eval_pairs_format, False)


def _train_here(cfg: RLHFConfig, model_dir: Path, train_set: list, eval_set: list, tokenizer,
                tracker: MetricsLogger, total_updates: int, out_dir: Path) -> tuple[list[dict], int]:
    """The one-process run: train in this process, export to out_dir. Returns (history, skipped updates)."""
    from rlhf_dist.backends.train.factory import build_train_engine

    tcfg, pad_id = cfg.reward.train, tokenizer.pad_token_id
    model = load_reward_model(cfg.reward_model, model_dir, trainable=True)
    engine = build_train_engine(model, tcfg, total_updates, cfg.reward_model.dtype)  # this process alone
    history = train_epochs(
        engine, train_set, lambda b: collate_pairs(b, pad_id), bradley_terry_objective,
        lambda m: evaluate_reward_model(m, eval_set, pad_id), tcfg, cfg.reward.epochs, tracker, "rm", cfg.run.seed,
    )
    merge_lora(engine.module).save_pretrained(out_dir, tokenizer=tokenizer)  # LoRA merged: a plain HF dir
    share_weights(out_dir)
    return history, engine.skipped_updates
