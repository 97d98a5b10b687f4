"""DPO on the policy's Ray + DeepSpeed group: SFT's rank (workers/supervised.py) with the DPO objective.

    group = DPOGroup(stage_cfg, placement, ranks)                       # cluster.policy's resources
    group.init_stage(model_dir, total_updates, train_ref, eval_ref, pad_id).result()
    answers = group.reference_logprobs().result()    # before any update: the starting policy = the reference
    group.set_reference(chosen_ref, rejected_ref).result()
    per_rank = group.train_updates(epoch, first, count).result()      # as SFT / RM
    answers = group.evaluate().result(); group.export_hf(out_dir).result()

The reference log-probs come from this group before its first update (identical weights, and with LoRA
a zero adapter: the base model), so DPO needs no reference actors; the driver caches them in the run dir.
"""

from __future__ import annotations

import torch

from rlhf_dist.algo import preference_losses
from rlhf_dist.config.schema_parts import TrainConfig
from rlhf_dist.data import collate_pairs
from rlhf_dist.models.dpo_objective import DPOExample, collate_dpo, dpo_inputs, dpo_objective, pair_logprobs
from rlhf_dist.workers.dispatch import Dispatch, Gather, dispatch
from rlhf_dist.workers.supervised import SupervisedGroup, SupervisedTrainer
from rlhf_dist.workers.trainers import PolicyWorker


class DPOWorker(SupervisedTrainer, PolicyWorker):
    """One rank of DPO: the policy model, trained with dpo.train on dpo.loss."""

    log_name = "dpo"
    eval_batch_size = 16

    def training_config(self) -> TrainConfig:
        return self.cfg.dpo.train

    def objective(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return dpo_objective(self.cfg.dpo)(model, batch)

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        return collate_dpo(examples, self.pad_id)

    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.FLATTEN)
    @torch.no_grad()
    def reference_logprobs(self) -> list:
        """Summed response log-probs (chosen [b], rejected [b]) per batch of this rank's contiguous shard of
        train pairs + held-out pairs, under the current weights (call it before the first update). Under
        ZeRO-3 a forward is a collective: every rank runs as many batches as the rank with the most."""
        self.engine.eval()
        pairs = list(self.train_set) + list(self.eval_set)
        shard = torch.tensor_split(torch.arange(len(pairs)), self.world_size)[self.rank].tolist()
        batches = [shard[i : i + self.eval_batch_size] for i in range(0, len(shard), self.eval_batch_size)]
        n_real = len(batches)
        if self.engine.shards_parameters:
            from rlhf_dist.backends.train.collectives import group_max

            batches += [[0]] * (group_max(n_real) - n_real)
        answers = []
        for ids in batches:
            batch = self._on_device(collate_pairs([pairs[i] for i in ids], self.pad_id))
            chosen, rejected, _, _ = pair_logprobs(self.engine.model, batch)
            answers.append((chosen.float().cpu(), rejected.float().cpu()))
        self.engine.release_gathered()
        self.engine.train()
        return answers[:n_real]

    @dispatch(Dispatch.ONE_TO_ALL)
    def set_reference(self, chosen: torch.Tensor, rejected: torch.Tensor) -> int:
        """Attach the reference log-probs ([N_train + N_eval] each, train pairs first) to the examples."""
        pairs = list(self.train_set) + list(self.eval_set)
        if len(pairs) != len(chosen) or len(pairs) != len(rejected):
            raise ValueError(f"{len(chosen)} reference log-probs for {len(pairs)} pairs")
        examples = [DPOExample(p, float(c), float(r)) for p, c, r in zip(pairs, chosen.tolist(), rejected.tolist())]
        n_train = len(self.train_set)
        self.train_set, self.eval_set = examples[:n_train], examples[n_train:]
        return len(examples)

    def eval_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(per-pair losses, chosen rewards, rejected rewards, targets, weights), each [B] on the CPU."""
        x = dpo_inputs(self.engine.model, batch, self.cfg.dpo)
        losses, chosen, rejected = preference_losses(self.cfg.dpo.loss, x)
        return tuple(t.float().cpu() for t in (losses, chosen, rejected, x.target, batch["weight"]))


class DPOGroup(SupervisedGroup):
    role_name, worker = "policy", DPOWorker
