"""The supervised training loop of SFT and reward-model training when the stage trains in this
process (`backend: torch` on CPU; config/topology.py trains_in_driver). On a Ray + DeepSpeed group the
same schedule runs on every rank (driver/supervised.py, workers/supervised.py).

    history = train_epochs(engine, examples, collate, loss_fn, evaluate, tcfg, epochs, tracker, "rm", seed)

Shuffles every epoch (seeded), feeds each update's micro-batches through engine.backward/step
(backends/train/supervised.py: the batches every rank of a group would see), logs every optimizer
update, and runs `evaluate` after every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhf_dist.backends.train import TrainEngine
from rlhf_dist.backends.train.supervised import LossFn, epoch_order, train_update, update_micro_batches
from rlhf_dist.config.schema_parts import TrainConfig
from rlhf_dist.data.errors import DataFileError
from rlhf_dist.tracking import MetricsLogger


def updates_per_epoch(n_examples: int, tcfg: TrainConfig, what: str = "training examples",
                      option: str = "train.global_batch_size") -> int:
    if n_examples < tcfg.global_batch_size:
        raise DataFileError(f"{n_examples} {what} is fewer than one global batch ({option} = "
                            f"{tcfg.global_batch_size}): add rows or lower --{option}")
    return n_examples // tcfg.global_batch_size


def train_epochs(
    engine: TrainEngine,
    examples: list,
    collate: Callable[[list], dict[str, torch.Tensor]],
    loss_fn: LossFn,
    evaluate: Callable[[torch.nn.Module], dict[str, float]],
    tcfg: TrainConfig,
    epochs: int,
    tracker: MetricsLogger,
    phase: str,
    seed: int,
) -> list[dict[str, float]]:
    """Returns one eval dict per epoch (with "epoch")."""
    n_updates = updates_per_epoch(len(examples), tcfg)
    history, update = [], 0
    for epoch in range(1, epochs + 1):
        engine.train()
        order = epoch_order(seed, epoch, len(examples))
        for u in range(n_updates):
            micro = update_micro_batches(order, u, tcfg, world_size=1, rank=0)
            stats = train_update(engine, [collate([examples[i] for i in ids]) for ids in micro], loss_fn)
            update += 1
            tracker.log_update(stats, update, phase, epoch, epochs, len(micro))
        engine.eval()
        metrics = {"epoch": epoch, **evaluate(engine.model)}
        tracker.log_epoch(metrics, update, phase)
        history.append(metrics)
    return history
