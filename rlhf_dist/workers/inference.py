"""Inference roles: the frozen reference, the reward model, and the rollout engines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rlhf_dist.backends.train.collectives import group_max
from rlhf_dist.config.topology import engine_sleep_level, engines_sleep, inference_chunk_size
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.models import load_causal_lm, load_reward_model, load_tokenizer
from rlhf_dist.models.forward import chunked_response_logprobs
from rlhf_dist.models.reward_scoring import score_texts
from rlhf_dist.workers.base import RoleWorker
from rlhf_dist.workers.dispatch import Dispatch, Gather, dispatch
from rlhf_dist.workers.tensor_wire import WireTensor, tensors_from_wire

if TYPE_CHECKING:
    from rlhf_dist.backends.rollout.base import RolloutSample


class ReferenceWorker(RoleWorker):
    """The frozen starting policy; gives ref log-probs for the KL penalty.

    ppo.reference_zero_stage 0: every rank holds a full replica and scores its shard alone.
    3: the ranks shard the weights (DeepSpeed ZeRO-3 inference, backends/train/frozen.py), so each
    forward is a collective; the ranks pad their chunks to the group's most (workers never deadlock
    on uneven shards) and drop the padding's answers."""

    @dispatch(Dispatch.ONE_TO_ALL)
    def init_model(self, model_dir: str | Path) -> None:
        """Load the frozen reference (partitioned over the ranks with ppo.reference_zero_stage 3)."""
        model_dir = str(model_dir)
        self.sharded = self.cfg.ppo.reference_zero_stage == 3
        if not self.sharded:
            self.model = load_causal_lm(self.cfg.policy, model_dir, trainable=False).to(self.device)
            return
        from rlhf_dist.backends.train.frozen import zero3_inference_loading, zero3_inference_module

        # Partitioned as it loads, onto this rank's device: no rank ever holds (or moves) the whole model.
        with zero3_inference_loading(self.cfg.policy.dtype):
            model = load_causal_lm(self.cfg.policy, model_dir, trainable=False)
        self.model = zero3_inference_module(model, self.cfg.policy.dtype)

    @dispatch(Dispatch.SHARD_BATCH, gather=Gather.CONCAT)
    def logprobs(self, inputs: ModelInputs) -> torch.Tensor:
        """[B, R] log-probs of the response tokens under the reference."""
        return self.logprobs_and_entropy(inputs, with_entropy=False)[0]

    @dispatch(Dispatch.SHARD_BATCH, gather=Gather.CONCAT)
    def logprobs_and_entropy(self, inputs: ModelInputs, with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, R] log-probs of the response tokens, [B, R] entropy of each next-token distribution, or an
        empty tensor without with_entropy)."""
        size = inference_chunk_size(self.cfg)
        rows = len(inputs)
        if self.sharded:  # as many forwards as the rank with the most chunks: repeat row 0 (or a pad row)
            inputs = _padded_to(inputs, group_max(-(-rows // size)) * size)
        logprobs, entropy = chunked_response_logprobs(self.model, inputs.sequences, inputs.attention_mask,
                                                      inputs.response_width, size, with_entropy=with_entropy)
        return logprobs[:rows], (entropy[:rows] if with_entropy else torch.empty(0))


def _padded_to(inputs: ModelInputs, rows: int) -> ModelInputs:
    """`inputs` with copies of its first row appended up to `rows` (an empty shard: an all-pad row)."""
    if len(inputs) >= rows:
        return inputs
    if len(inputs) == 0:
        length, width = inputs.sequences.shape[1], inputs.response_width
        inputs = ModelInputs(torch.zeros(1, length, dtype=torch.long), torch.ones(1, length, dtype=torch.long),
                             torch.zeros(1, width))
    return ModelInputs.concat([inputs] + [inputs.select(slice(0, 1))] * (rows - len(inputs)))


class RewardWorker(RoleWorker):
    """Scores (prompt, response) TEXT with the reward model's own tokenizer."""

    @dispatch(Dispatch.ONE_TO_ALL)
    def init_model(self, model_dir: str | Path) -> None:
        """Load the reward model and its own tokenizer."""
        model_dir = str(model_dir)
        self.model = load_reward_model(self.cfg.reward_model, model_dir, trainable=False).to(self.device)
        self.tokenizer = load_tokenizer(model_dir, self.cfg.reward_model.trust_remote_code)

    @dispatch(Dispatch.SHARD_LIST, gather=Gather.FLATTEN, shard=("prompts", "responses"))
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One scalar per (prompt, response), formatted exactly like the RM's training pairs."""
        return score_texts(self.model, self.tokenizer, prompts, responses, self.cfg.data.max_length, self.device,
                           self.cfg.reward_model.score_batch_size)


class RolloutWorker(RoleWorker):
    """Hosts one rollout engine (vLLM or HF generate) behind the RolloutEngine interface."""

    @dispatch(Dispatch.ONE_TO_ALL)
    def init_model(self, model_dir: str | Path) -> None:
        """Start this actor's engine on the model dir."""
        from rlhf_dist.backends.rollout import build_rollout_engine
        from rlhf_dist.backends.sync.transports.lora import wants_adapter_sync

        # LoRA adapter sync: the engine keeps the base weights and serves each synced adapter on top.
        lora_rank = self.cfg.policy.lora.r if wants_adapter_sync(self.cfg) else None
        self.engine = build_rollout_engine(
            model_dir, self.cfg.rollout, self.cfg.cluster.device, self.cfg.policy.dtype, self.cfg.run.seed + self.rank,
            max_lora_rank=lora_rank, sleep_mode=engines_sleep(self.cfg),
        )

    def _sleep_level(self, at_load: bool) -> int:
        from rlhf_dist.backends.sync.transports.lora import wants_adapter_sync

        return engine_sleep_level(at_load, wants_adapter_sync(self.cfg))

    @dispatch(Dispatch.ONE_TO_ALL)
    def sleep(self, at_load: bool = False) -> None:
        """Colocated on CUDA: the engine releases its GPU memory (vLLM sleep mode); else a no-op. Level 1
        (weights kept) `at_load` (the sleep while the other roles load, before any sync) or with the adapter
        sync, else 2 (config/topology.py engine_sleep_level)."""
        self.engine.sleep(self._sleep_level(at_load))

    @dispatch(Dispatch.ONE_TO_ALL)
    def wake_up(self) -> None:
        # where later sleeps are level 2, the pinned host copy of a level-1 sleep is never reused: free it
        self.engine.wake_up(free_host_cache=self._sleep_level(at_load=False) == 2)

    def peak_memory(self) -> int:
        """This process's peak (RoleWorker.peak_memory) or, TP > 1 on CUDA, its engine workers' if higher."""
        return max(super().peak_memory(), self.engine.worker_peak_memory())

    @dispatch(Dispatch.SHARD_LIST, gather=Gather.FLATTEN)
    def generate(self, prompt_ids: list[list[int]], seed: int) -> list[list[RolloutSample]]:
        """RolloutSample groups, one list per prompt, in prompt order (a contiguous chunk of the prompts per
        engine). Engine e samples with seed * 1009 + e: engines draw different samples, runs repeat exactly."""
        return self.engine.generate(prompt_ids, self.cfg.rollout.sampling, seed * 1_009 + self.rank)

    @dispatch(Dispatch.ONE_TO_ALL)
    def update_weights(self, bucket: list) -> None:
        """One bucket from PolicyWorker.weight_bucket: [ref to numpy arrays], read zero-copy from the store."""
        import ray

        self.engine.update_weights(tensors_from_wire(ray.get(bucket[0])))

    @dispatch(Dispatch.ONE_TO_ALL, put_once=True)
    def load_lora_adapter(self, tensors: list[WireTensor], adapter_config: dict, version: int) -> None:
        """The policy's LoRA adapter (PolicyWorker.lora_adapter), served on the base weights from now on
        (version: distinct per sync). The adapter goes into the object store once for every engine."""
        self.engine.load_lora_adapter(tensors_from_wire(tensors), adapter_config, version)

    def reset_prefix_cache(self) -> None:
        self.engine.reset_prefix_cache()

    # NCCL weight sync (CUDA): the engine's workers join policy rank 0's broadcast group.
    @dispatch(Dispatch.ONE_TO_ALL)
    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> None:
        """Engine e's tensor-parallel workers join policy rank 0's NCCL group as ranks 1 + e * TP ..."""
        rank_offset = 1 + self.rank * self.cfg.rollout.tensor_parallel_size
        self.engine.init_weight_broadcast(host, port, rank_offset, world_size)

    @dispatch(Dispatch.ONE_TO_ALL)
    def receive_weights(self, meta: list) -> None:
        """NCCL: receive one bucket broadcast by policy rank 0 (meta: its TensorMeta list, in order)."""
        self.engine.receive_weights(meta)

    @dispatch(Dispatch.ONE_TO_ALL)
    def receive_shared_weights(self, shared: list) -> None:
        """CUDA IPC (colocated): load the bucket the policy rank on this engine's GPU shares."""
        self.engine.receive_shared_weights(shared)
