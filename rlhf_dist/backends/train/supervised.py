"""Which examples each rank trains on, and one optimizer update over them: the part of SFT and
reward-model training that the one-process stage (stages/loop.py) and every rank of a Ray +
DeepSpeed group (workers/supervised.py) share, so both see the same batches.

    order = epoch_order(seed, epoch, n)                           # the same permutation on every rank
    micro = update_micro_batches(order, update, tcfg, world, rank) # this rank's share of one global batch
    stats = train_update(engine, [collate(b) for b in micro], loss_fn)

A global batch of `global_batch_size` examples is split into `world_size` contiguous slices, one per
rank, each fed as micro-batches of `micro_batch_size`; with one rank the micro-batches are exactly the
one-process stage's, in its order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhf_dist.backends.train.base import TrainEngine
from rlhf_dist.config.schema_parts import TrainConfig

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def epoch_order(seed: int, epoch: int, n_examples: int) -> list[int]:
    """The shuffled example order of `epoch` (1-based): the epoch-th permutation drawn from one generator
    seeded with `seed`, as the one-process loop draws them epoch after epoch."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.arange(n_examples)
    for _ in range(epoch):
        order = torch.randperm(n_examples, generator=gen)
    return order.tolist()


def rank_batch_size(tcfg: TrainConfig, world_size: int) -> int:
    """Examples one rank trains on per update (global_batch_size / world_size); checked by config rules."""
    if tcfg.global_batch_size % (tcfg.micro_batch_size * world_size):
        raise ValueError(f"global_batch_size {tcfg.global_batch_size} is not a multiple of micro_batch_size "
                         f"{tcfg.micro_batch_size} x {world_size} ranks")
    return tcfg.global_batch_size // world_size


def update_micro_batches(order: list[int], update: int, tcfg: TrainConfig, world_size: int,
                         rank: int) -> list[list[int]]:
    """Example indices of this rank's micro-batches in update `update` (0-based within the epoch)."""
    per_rank = rank_batch_size(tcfg, world_size)
    start = update * tcfg.global_batch_size + rank * per_rank
    mine = order[start : start + per_rank]
    micro = tcfg.micro_batch_size
    return [mine[i : i + micro] for i in range(0, per_rank, micro)]


def train_update(engine: TrainEngine, batches: list[dict[str, torch.Tensor]], loss_fn: LossFn) -> dict[str, float]:
    """backward + step over one update's micro-batches (the last one closes the accumulation window).

    Returns the mean loss and stats over the micro-batches, and the update's grad_norm, lr and applied
    (0.0 when the engine skipped a non-finite update)."""
    rows: list[dict[str, float]] = []
    info = None
    for batch in batches:
        loss, stats = loss_fn(engine.model, batch)
        engine.backward(loss)
        info = engine.step()
        rows.append({"loss": float(loss.detach()), **stats})
    if info is None or not info.boundary:
        raise RuntimeError("an update's micro-batches did not close an accumulation window: "
                           "micro-batch count and gradient accumulation disagree")
    out = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
    out.update(grad_norm=info.grad_norm if info.grad_norm is not None else float("nan"),
               lr=info.lr if info.lr is not None else float("nan"), applied=float(info.applied))
    return out
