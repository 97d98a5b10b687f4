"""DAPO dynamic sampling in the loop: keep the prompt groups that teach something, sample more until full.

A group whose G samples all score the same has advantage 0 everywhere under GRPO / RLOO / Dr. GRPO: it
adds no gradient. With ppo.dynamic_sampling the step scores its rollout, keeps the informative groups
(algo/sampling.py), and generates further rounds of fresh prompts (driver/rollouts.py RolloutQueue.extra)
until rollout_batch_size groups are kept or ppo.dynamic_sampling_max_rounds rounds ran; a batch still
short is filled with dropped groups (zero advantage: they change nothing but keep the batch shape the
trainers' batch sizes need) and counted in `dapo/groups_filled`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhf_dist.algo.sampling import group_sample_indices, keep_informative_groups
from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.experience import RolloutBatch, concat_rollouts

Scorer = Callable[[RolloutBatch], tuple[torch.Tensor, dict[str, float]]]


def informative_batch(cfg: RLHFConfig, first: RolloutBatch, score: Scorer, more: Callable[[int], RolloutBatch],
                      pad_id: int) -> tuple[RolloutBatch, torch.Tensor, dict[str, float], dict[str, float]]:
    """(batch of rollout_batch_size groups, its scores [B], reward means, dapo/* stats)."""
    group, want = cfg.rollout.sampling.samples_per_prompt, cfg.ppo.rollout_batch_size
    kept: list[tuple[RolloutBatch, torch.Tensor]] = []
    spare: list[tuple[RolloutBatch, torch.Tensor]] = []  # dropped groups, in case the rounds run out
    parts: list[dict[str, float]] = []
    n_kept = dropped = rounds = 0
    batch = first
    while True:
        scores, means = score(batch)  # [B_round]
        parts.append(means)
        informative = keep_informative_groups(scores, group)
        take = informative[: want - n_kept]
        rows = group_sample_indices(take, group)
        kept.append((batch.select(rows), scores[rows]))
        uninformative = torch.tensor([g for g in range(len(batch) // group) if g not in set(informative.tolist())],
                                     dtype=torch.long)
        rows = group_sample_indices(uninformative, group)
        spare.append((batch.select(rows), scores[rows]))
        n_kept, dropped, rounds = n_kept + len(take), dropped + len(uninformative), rounds + 1
        if n_kept >= want or rounds >= cfg.ppo.dynamic_sampling_max_rounds:
            break
        batch = more(rounds)
    filled = 0
    for spare_batch, spare_scores in spare:  # short after the last round: zero-advantage groups fill it
        need = min(want - n_kept - filled, len(spare_batch) // group)
        if need > 0:
            rows = torch.arange(need * group)
            kept.append((spare_batch.select(rows), spare_scores[rows]))
            filled += need
    out = concat_rollouts([b for b, _ in kept if len(b)], pad_id)
    reward_means = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
    stats = {"dapo/rounds": float(rounds), "dapo/groups_dropped": float(dropped), "dapo/groups_filled": float(filled)}
    return out, torch.cat([s for _, s in kept]), reward_means, stats
