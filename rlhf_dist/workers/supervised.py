"""SFT and reward-model training on a Ray + DeepSpeed group, as PPO trains its policy and critic.

    group = SFTGroup(stage_cfg, placement, ranks)      # the policy's resources (cluster.policy)
    group.init_stage(model_dir, total_updates, train_ref, eval_ref, pad_id).result()
    per_rank = group.train_updates(epoch, first, count).result()   # [rank][update] -> stats
    answers = group.evaluate().result()                             # every rank's shares, in order
    group.export_hf(out_dir).result()

Every rank holds the (tokenised) examples and computes the same epoch order; in each update rank r
trains on the r-th slice of the global batch (backends/train/supervised.py), so N ranks see exactly
the batches of the one-process stage and DeepSpeed averages their gradients. Evaluation splits the
held-out set into contiguous shards; the driver combines the ranks' shares (stages/sft.py, reward.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_dist.backends.train.supervised import LossFn, epoch_order, train_update, update_micro_batches
from rlhf_dist.config.schema_parts import LoRAConfig, TrainConfig
from rlhf_dist.data import collate_pairs, collate_sft
from rlhf_dist.models import load_reward_model
from rlhf_dist.models.objectives import bradley_terry_objective, response_nll, score_pairs, sft_loss
from rlhf_dist.workers.dispatch import Dispatch, Gather, dispatch
from rlhf_dist.workers.role_groups import TrainerGroup
from rlhf_dist.workers.trainers import CriticWorker, PolicyWorker, num_parameters


class SupervisedTrainer:
    """What SFT and reward-model ranks share (mixed into a PolicyWorker / CriticWorker)."""

    objective: LossFn
    eval_batch_size: int

    @dispatch(Dispatch.ONE_TO_ALL)
    def init_stage(self, model_dir: str | Path, total_updates: int, train_set: list, eval_set: list,
                   pad_id: int) -> int:
        """Load the model and build the engine (collective); keep the examples. Returns the parameter count.
        The driver passes the example lists as object-store refs (put once; every rank reads them)."""
        self.train_set, self.eval_set, self.pad_id = train_set, eval_set, pad_id
        return self.init_model(model_dir, total_updates)

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.LIST)
    def train_updates(self, epoch: int, first: int, count: int) -> list[dict[str, float]]:
        """Updates first .. first+count-1 of `epoch` on this rank's slice of each global batch."""
        self.engine.train()
        order = epoch_order(self.cfg.run.seed, epoch, len(self.train_set))
        out = []
        for update in range(first, first + count):
            micro = update_micro_batches(order, update, self.train_cfg, self.world_size, self.rank)
            batches = [self._on_device(self.collate([self.train_set[i] for i in ids])) for ids in micro]
            out.append(train_update(self.engine, batches, self.objective))
        return out

    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.FLATTEN)
    @torch.no_grad()
    def evaluate(self) -> list:
        """This rank's answers (eval_batch's) for its contiguous shard of the held-out set, in order (the group
        joins the ranks' answers in rank order: the held-out set's order).

        Under ZeRO-3 a forward is a collective: every rank runs as many batches as the rank with the
        most, repeating its first example, and drops those answers."""
        self.engine.eval()
        shard = torch.tensor_split(torch.arange(len(self.eval_set)), self.world_size)[self.rank].tolist()
        size = self.eval_batch_size
        batches = [shard[i : i + size] for i in range(0, len(shard), size)]
        n_real = len(batches)
        if self.engine.shards_parameters:
            from rlhf_dist.backends.train.collectives import group_max

            batches += [[0]] * (group_max(n_real) - n_real)
        answers = [self.eval_batch(self._on_device(self.collate([self.eval_set[i] for i in ids])))
                   for ids in batches]
        self.engine.release_gathered()  # ZeRO-3 keeps what a no-grad forward gathered until the next backward
        self.engine.train()
        return answers[:n_real]

    def eval_batch(self, batch: dict[str, torch.Tensor]):
        raise NotImplementedError

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.device) for key, value in batch.items()}


class SFTWorker(SupervisedTrainer, PolicyWorker):
    """One rank of SFT: the policy model on the policy's resources, trained with sft.train."""

    log_name = "sft"
    objective, eval_batch_size = staticmethod(sft_loss), 16

    def training_config(self) -> TrainConfig:
        return self.cfg.sft.train

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        return collate_sft(examples, self.pad_id)

    def eval_batch(self, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
        """(summed NLL over response tokens, their count)."""
        nll, count = response_nll(self.engine.model, batch)
        return float(nll), count


class RewardTrainWorker(SupervisedTrainer, CriticWorker):
    """One rank of reward-model training (Bradley-Terry) on the reward role's resources, with reward.train."""

    log_name = "rm"
    objective, eval_batch_size = staticmethod(bradley_terry_objective), 32

    def init_model(self, model_dir: str | Path, total_updates: int) -> int:
        self.train_cfg, self.init_dir = self.cfg.reward.train, str(model_dir)
        with self._loading(self.train_cfg, self.cfg.reward_model.dtype):  # ZeRO-3: partitioned as it loads
            model = load_reward_model(self.cfg.reward_model, model_dir, trainable=True)
        self._build_engine(model, total_updates, self.cfg.reward_model.dtype)
        return num_parameters(model)

    def _export_lora(self) -> LoRAConfig:
        return self.cfg.reward_model.lora

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        return collate_pairs(examples, self.pad_id)

    def eval_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chosen scores, rejected scores, targets), each [B] on the CPU."""
        chosen, rejected = score_pairs(self.engine.model, batch)
        return chosen.float().cpu(), rejected.float().cpu(), batch["target"].cpu()


class SupervisedGroup(TrainerGroup):
    """The ranks of one supervised stage (its calls: SupervisedTrainer's declared methods)."""


class SFTGroup(SupervisedGroup):
    role_name, worker = "policy", SFTWorker


class RewardTrainGroup(SupervisedGroup):
    role_name, worker = "reward", RewardTrainWorker
