"""The supervised training loop shared by SFT and reward-model training.

    history = train_epochs(engine, examples, collate, loss_fn, evaluate, tcfg, epochs, tracker, "rm", seed)

Shuffles every epoch (seeded), feeds micro-batches through engine.backward/step, logs at each
optimizer update, and runs `evaluate` after every epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhf_dist.backends.train import TrainEngine
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
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]],
    evaluate: Callable[[torch.nn.Module], dict[str, float]],
    tcfg: TrainConfig,
    epochs: int,
    tracker: MetricsLogger,
    phase: str,
    seed: int,
) -> list[dict[str, float]]:
    """Returns one eval dict per epoch (with "epoch")."""
    micro = tcfg.micro_batch_size
    n_micro = updates_per_epoch(len(examples), tcfg) * tcfg.global_batch_size // micro
    gen = torch.Generator().manual_seed(seed)
    history, update = [], 0
    for epoch in range(1, epochs + 1):
        engine.train()
        order = torch.randperm(len(examples), generator=gen).tolist()
        for k in range(n_micro):
            batch = collate([examples[i] for i in order[k * micro : (k + 1) * micro]])
            loss, stats = loss_fn(engine.model, batch)
            engine.backward(loss)
            info = engine.step()
            if info.boundary:
                update += 1
                tracker.log({"loss": loss.item(), **stats, "grad_norm": info.grad_norm, "lr": info.lr},
                            step=update, phase=f"{phase}/train")
            tracker.advance(status=f"epoch {epoch}/{epochs} loss {loss.item():.4f}")
        engine.eval()
        metrics = {"epoch": epoch, **evaluate(engine.model)}
        tracker.log(metrics, step=update, phase=f"{phase}/eval")
        tracker.print(f"{phase}: epoch {epoch}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        history.append(metrics)
    return history
