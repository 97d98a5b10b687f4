"""One typed group per role: what the driver may ask each role, with typed inputs and outputs.

Each method starts the call on the right ranks and returns a `Pending[...]`; `.result()` waits
(with the group's deadline) and gathers the ranks' answers. Batches are split over ranks with
`TensorBatch.shard` and the answers joined in rank order, so callers see one batch in, one out:

    policy.logprobs(inputs).result()          # ModelInputs [B, ...] -> log-probs [B, R]
    policy.train(experience, step).result()   # Experience [B, ...] -> TrainStats per rank
"""

from __future__ import annotations

from pathlib import Path

import ray
import torch

from rlhf_dist.backends.sync.buckets import Bucket, TensorMeta
from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.experience import Experience, ModelInputs, TrainStats
from rlhf_dist.workers.group import ActorGroup, Pending, Placement
from rlhf_dist.workers.inference import ReferenceWorker, RewardWorker, RolloutWorker
from rlhf_dist.workers.tensor_wire import WireTensor
from rlhf_dist.workers.trainers import CriticWorker, PolicyWorker


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts)


def _none(_answers: list) -> None:
    return None


def _contiguous(items: list, n: int) -> list[list]:
    """n contiguous, near-equal chunks of `items` (rank i gets chunk i; order kept when joined)."""
    return [[items[i] for i in idx.tolist()] for idx in torch.tensor_split(torch.arange(len(items)), n)]


class RoleGroup(ActorGroup):
    """An ActorGroup whose role, worker class and process-group need are fixed by the subclass."""

    role_name: str
    worker: type
    distributed: bool = False

    def __init__(self, cfg: RLHFConfig, placement: Placement, num_actors: int):
        super().__init__(self.role_name, self.worker, cfg, placement, num_actors, distributed=self.distributed)

    def memory_probe_start(self) -> None:
        """Every rank samples its private resident memory until memory_probe_stop (workers/base.py)."""
        self.each("memory_probe_start", lambda a: a.memory_probe_start.remote()).result()

    def memory_probe_stop(self) -> list[int]:
        """Each rank's peak private resident bytes above its baseline since memory_probe_start."""
        return self.each("memory_probe_stop", lambda a: a.memory_probe_stop.remote()).result()

    def peak_memory(self) -> Pending[list[int]]:
        """Each rank's peak memory in bytes since the previous call (workers/base.py RoleWorker.peak_memory)."""
        return self.each("peak_memory", lambda a: a.peak_memory.remote())


class FrozenGroup(RoleGroup):
    """A role that loads one model directory and never trains: reference, reward, rollout."""

    def init_model(self, model_dir: Path) -> Pending[None]:
        return self.each("init_model", lambda a: a.init_model.remote(str(model_dir)), _none)


class TrainerGroup(RoleGroup):
    """A data-parallel DeepSpeed (or torch) group: policy or critic."""

    distributed = True

    def init_model(self, model_dir: Path, total_updates: int) -> Pending[None]:
        return self.each("init_model", lambda a: a.init_model.remote(str(model_dir), total_updates), _none)

    def train(self, experience: Experience, step: int) -> Pending[list[TrainStats]]:
        """PPO epochs, rank i on shard i of the batch; one TrainStats per rank."""
        return self.sharded("train_ppo", lambda a, part: a.train_ppo.remote(part, step),
                            experience.shard(self.num_actors))

    def export_hf(self, out_dir: Path) -> Path:
        """A plain HF dir of the trained model (LoRA merged), written by rank 0. Collective."""
        return Path(self.each("export_hf", lambda a: a.export_hf.remote(str(out_dir))).result()[0])

    def save_checkpoint(self, directory: Path, tag: str) -> None:
        self.each("save_checkpoint", lambda a: a.save_checkpoint.remote(str(directory), tag)).result()

    def load_checkpoint(self, directory: Path, tag: str) -> None:
        self.each("load_checkpoint", lambda a: a.load_checkpoint.remote(str(directory), tag)).result()


class PolicyGroup(TrainerGroup):
    role_name, worker = "policy", PolicyWorker

    def logprobs(self, inputs: ModelInputs) -> Pending[torch.Tensor]:
        """Current-policy log-probs of the response tokens, [B, R]."""
        return self.sharded("logprobs", lambda a, part: a.logprobs.remote(part), inputs.shard(self.num_actors), _cat)

    # ---- weight sync: the policy side of backends/sync (one bucket of whole layers at a time) ----
    def weight_sync_plan(self, bucket_mb: int) -> list[Bucket]:
        """The bucket plan (every rank computes the same one from metadata; rank 0's is returned)."""
        return self.each("weight_sync_plan", lambda a: a.weight_sync_plan.remote(bucket_mb)).result()[0]

    def weight_bucket(self, index: int) -> tuple[Any, Pending[None]]:
        """Object store: every rank gathers bucket `index` (a collective under ZeRO-3). Returns the ref to
        rank 0's bucket (list[WireTensor]; engines fetch it from the store) and the call on all ranks."""
        refs = [a.weight_bucket.remote(index) for a in self.actors]
        return refs[0], Pending(self, refs, f"weight_bucket {index}", _none)

    def broadcast_weight_bucket(self, index: int) -> Pending[None]:
        return self.each(f"broadcast_weight_bucket {index}", lambda a: a.broadcast_weight_bucket.remote(index), _none)

    def share_weight_bucket(self, index: int) -> Pending[list]:
        """CUDA IPC: (GPU UUID, handles) of bucket `index` from every rank."""
        return self.each(f"share_weight_bucket {index}", lambda a: a.share_weight_bucket.remote(index))

    def release_weight_bucket(self) -> Pending[None]:
        return self.each("release_weight_bucket", lambda a: a.release_weight_bucket.remote(), _none)

    def weight_broadcast_rendezvous(self) -> tuple[str, int]:
        return self.on_rank0("rendezvous", lambda a: a.weight_broadcast_rendezvous.remote()).result()

    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> Pending[None]:
        return self.on_rank0("init_weight_broadcast", lambda a: a.init_weight_broadcast.remote(host, port, world_size))

    def lora_adapter(self) -> Pending[tuple[list[WireTensor], dict]]:
        """Collective: only the LoRA parameters gathered; rank 0's (peft-named adapter, LoraConfig dict)."""
        return self.each("lora_adapter", lambda a: a.lora_adapter.remote(), lambda answers: answers[0])


class CriticGroup(TrainerGroup):
    role_name, worker = "critic", CriticWorker

    def values(self, inputs: ModelInputs) -> Pending[torch.Tensor]:
        """V(s_t) of every response token, [B, R]."""
        return self.sharded("values", lambda a, part: a.values.remote(part), inputs.shard(self.num_actors), _cat)


class ReferenceGroup(FrozenGroup):
    role_name, worker = "reference", ReferenceWorker

    def __init__(self, cfg: RLHFConfig, placement: Placement, num_actors: int):
        # ppo.reference_zero_stage 3: the ranks shard the weights, so they join one process group
        self.distributed = cfg.ppo.reference_zero_stage == 3
        super().__init__(cfg, placement, num_actors)

    def logprobs(self, inputs: ModelInputs) -> Pending[torch.Tensor]:
        """Frozen-reference log-probs of the response tokens, [B, R]."""
        return self.sharded("logprobs", lambda a, part: a.logprobs.remote(part), inputs.shard(self.num_actors), _cat)


class RewardGroup(FrozenGroup):
    role_name, worker = "reward", RewardWorker

    def score(self, prompts: list[str], responses: list[str]) -> Pending[list[float]]:
        """One reward-model score per (prompt, response), in order; contiguous chunks per rank."""
        parts = list(zip(_contiguous(prompts, self.num_actors), _contiguous(responses, self.num_actors)))
        return self.sharded("score", lambda a, part: a.score.remote(*part), parts,
                            lambda answers: [x for part in answers for x in part])


class RolloutGroup(FrozenGroup):
    """One rollout engine (vLLM or HF generate) per actor."""

    role_name, worker = "rollout", RolloutWorker

    def generate(self, prompt_ids: list[list[int]], seed: int) -> Pending[list]:
        """RolloutSample groups, one list per prompt, in prompt order (contiguous chunks per engine;
        engine e samples with seed * 1009 + e)."""
        parts = list(enumerate(_contiguous(prompt_ids, self.num_actors)))
        return self.sharded("generate", lambda a, part: a.generate.remote(part[1], seed * 1_009 + part[0]), parts,
                            lambda answers: [group for part in answers for group in part])

    def sleep(self, at_load: bool = False) -> Pending[None]:
        """Colocated on CUDA: every engine releases its GPU memory (vLLM sleep mode); else a no-op.
        at_load: the sleep while the other roles load, before any sync (the engines keep their weights)."""
        return self.each("sleep", lambda a: a.sleep.remote(at_load), _none)

    def wake_up(self) -> Pending[None]:
        return self.each("wake_up", lambda a: a.wake_up.remote(), _none)

    def update_weights(self, bucket_ref: Any) -> Pending[None]:
        """Every engine loads one object-store bucket (the ref from PolicyGroup.weight_bucket)."""
        return self.each("update_weights", lambda a: a.update_weights.remote(bucket_ref), _none)

    def receive_weights(self, meta: list[TensorMeta]) -> Pending[None]:
        """NCCL: every engine receives one bucket broadcast by policy rank 0."""
        return self.each("receive_weights", lambda a: a.receive_weights.remote(meta), _none)

    def receive_shared_weights(self, shared: list) -> Pending[None]:
        """CUDA IPC: every engine's workers load the bucket shared by the policy rank on their GPU."""
        return self.each("receive_shared_weights", lambda a: a.receive_shared_weights.remote(shared), _none)

    def load_lora_adapter(self, tensors: list[WireTensor], adapter_config: dict, version: int) -> Pending[None]:
        """Every engine serves this adapter (version: distinct per sync) from now on; put in the store once."""
        ref = ray.put(tensors)
        return self.each("load_lora_adapter", lambda a: a.load_lora_adapter.remote(ref, adapter_config, version), _none)

    def init_weight_broadcast(self, host: str, port: int, tensor_parallel: int, world_size: int) -> Pending[None]:
        """Engine e's TP workers join policy rank 0's NCCL group as ranks 1 + e * TP ..."""
        refs = [a.init_weight_broadcast.remote(host, port, 1 + e * tensor_parallel, world_size)
                for e, a in enumerate(self.actors)]
        return Pending(self, refs, "init_weight_broadcast", _none)
