"""Direct preference optimisation of the policy (`rlhf-dist dpo`): the other way to learn from the votes.

    rlhf-dist dpo -c configs/tiny.yaml [--dpo.loss ipo] [--resume]

Reads the reward stage's preference files in any of its formats (data.pairs_path / eval_pairs_path,
data.pairs_format: pairs, A/B feedback with ties and soft votes, ranked lists, ratings; the same held-out
split), tokenised with the policy's tokenizer, and trains the policy (policy.path, LoRA optional) on its
Ray + DeepSpeed group (cluster.policy; driver/dpo.py) with dpo.loss. Every bad input is one line before
anything is written. Outputs: metrics.jsonl (`dpo/train`: loss, rewards/chosen, rewards/rejected, margin,
accuracy per update; `dpo/eval`: the same on the held-out pairs per epoch), checkpoints, the reference
log-prob cache <run>/dpo/, dpo_metrics.json and the trained policy as a plain HF dir in <run>/policy.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_dist.config import ConfigError, RLHFConfig
from rlhf_dist.data.files import resolve_data_files
from rlhf_dist.models import load_tokenizer, resolve_model_path
from rlhf_dist.stages.inputs import check_cluster
from rlhf_dist.stages.loop import updates_per_epoch
from rlhf_dist.stages.reward import _train_and_eval_sets
from rlhf_dist.storage import localize, push_outputs
from rlhf_dist.tracking import MetricsLogger
from rlhf_dist.utils import prepare_run_dir, seed_everything, write_json

log = logging.getLogger(__name__)


@dataclass
class DPOResult:
    policy_dir: Path
    run_dir: Path
    history: list[dict] = field(default_factory=list)  # held-out metrics per epoch
    reference_cached: bool = False


def pairs_fingerprint(model_dir: Path, pairs: list) -> str:
    """sha256 of the starting model's path and every pair's token ids: the reference cache's key."""
    digest = hashlib.sha256(str(Path(model_dir).resolve()).encode())
    for pair in pairs:
        digest.update(repr((pair.chosen.input_ids, pair.chosen.response_start, pair.rejected.input_ids)).encode())
    return digest.hexdigest()


def run_dpo_stage(cfg: RLHFConfig) -> DPOResult:
    """Read and check everything, then train on the policy's group, evaluate every epoch, export <run>/policy."""
    from rlhf_dist.driver.checkpoint import CheckpointManager
    from rlhf_dist.driver.dpo import DPOStage, train_dpo_on_group

    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    seed_everything(cfg.run.seed)
    model_dir = resolve_model_path(cfg.policy.path, seed=cfg.run.seed, option="policy.path")  # before any write
    files = resolve_data_files(cfg)
    tokenizer = load_tokenizer(model_dir, cfg.policy.trust_remote_code)
    train_set, eval_set, _ = _train_and_eval_sets(cfg, files, tokenizer, stage="dpo")
    updates_per_epoch(len(train_set), cfg.dpo.train, "training pairs", "dpo.train.global_batch_size")
    ckpt = CheckpointManager(Path(cfg.run.output_dir), cfg.checkpoint.keep_last, cfg.checkpoint.checksums)
    if cfg.checkpoint.resume is True and ckpt.latest() is None:
        raise ConfigError([f"checkpoint.resume: no complete checkpoint in {ckpt.root} (use --resume auto to start "
                           "fresh when there is none)"])
    check_cluster(cfg)  # the Ray cluster it trains on: reachable, with this shell's token
    run_dir = prepare_run_dir(cfg)  # config.yaml only once the inputs are known to be usable
    stage = DPOStage(model_dir, run_dir / "policy", train_set, eval_set, tokenizer.pad_token_id,
                     pairs_fingerprint(model_dir, train_set + eval_set))
    tcfg = cfg.dpo.train
    micro_steps = tcfg.global_batch_size // tcfg.micro_batch_size  # the progress bar counts micro-batches
    total = len(train_set) // tcfg.global_batch_size * cfg.dpo.epochs * micro_steps
    with MetricsLogger(run_dir, cfg.tracking, total=total, desc="dpo") as tracker:
        outcome = train_dpo_on_group(cfg, stage, tracker, ckpt)
    write_json(run_dir / "dpo_metrics.json", {"loss": cfg.dpo.loss, "history": outcome.history,
                                               "skipped_updates": outcome.skipped_updates,
                                               "reference_cached": outcome.reference_cached})
    log.info("DPO policy saved to %s", stage.out_dir)
    push_outputs(run_dir)
    return DPOResult(stage.out_dir, run_dir, outcome.history, outcome.reference_cached)
