"""Inference roles: the frozen reference, the reward model, and the rollout engines."""

from __future__ import annotations

import torch

from rlhf_dist.config.roles import inference_chunk_size
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.models import load_causal_lm, load_reward_model, load_tokenizer
from rlhf_dist.models.forward import chunked_response_logprobs
from rlhf_dist.models.reward_scoring import score_texts
from rlhf_dist.workers.base import RoleWorker
from rlhf_dist.workers.tensor_wire import WireTensor, tensors_from_wire


class ReferenceWorker(RoleWorker):
    """The frozen starting policy; gives ref log-probs for the KL penalty."""

    def init_model(self, model_dir: str) -> None:
        self.model = load_causal_lm(self.cfg.policy, model_dir, trainable=False).to(self.device)

    def logprobs(self, inputs: ModelInputs) -> torch.Tensor:
        """[B, R] log-probs of the response tokens under the reference."""
        return chunked_response_logprobs(self.model, inputs.sequences, inputs.attention_mask, inputs.response_width,
                                         inference_chunk_size(self.cfg))[0]


class RewardWorker(RoleWorker):
    """Scores (prompt, response) TEXT with the reward model's own tokenizer."""

    def init_model(self, model_dir: str) -> None:
        self.model = load_reward_model(self.cfg.reward_model, model_dir, trainable=False).to(self.device)
        self.tokenizer = load_tokenizer(model_dir, self.cfg.reward_model.trust_remote_code)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One scalar per (prompt, response), formatted exactly like the RM's training pairs."""
        return score_texts(self.model, self.tokenizer, prompts, responses, self.cfg.data.max_length, self.device,
                           self.cfg.reward_model.score_batch_size)


class RolloutWorker(RoleWorker):
    """Hosts one rollout engine (vLLM or HF generate) behind the RolloutEngine interface."""

    def init_model(self, model_dir: str) -> None:
        from rlhf_dist.backends.rollout import build_rollout_engine
        from rlhf_dist.backends.sync.lora import wants_adapter_sync

        # LoRA adapter sync: the engine keeps the base weights and serves each synced adapter on top.
        lora_rank = self.cfg.policy.lora.r if wants_adapter_sync(self.cfg) else None
        self.engine = build_rollout_engine(
            model_dir, self.cfg.rollout, self.cfg.cluster.device, self.cfg.policy.dtype, self.cfg.run.seed + self.rank,
            max_lora_rank=lora_rank,
        )

    def generate(self, prompt_ids: list[list[int]], seed: int):
        return self.engine.generate(prompt_ids, self.cfg.rollout.sampling, seed)

    def update_weights(self, bucket: list[WireTensor]) -> None:
        """One bucket from PolicyWorker.weight_bucket (numpy arrays, zero-copy from the object store)."""
        self.engine.update_weights(tensors_from_wire(bucket))

    def load_lora_adapter(self, tensors: list[WireTensor], adapter_config: dict, version: int) -> None:
        """The policy's LoRA adapter (PolicyWorker.lora_adapter), served on the base weights from now on."""
        self.engine.load_lora_adapter(tensors_from_wire(tensors), adapter_config, version)

    def reset_prefix_cache(self) -> None:
        self.engine.reset_prefix_cache()

    # NCCL weight sync (CUDA): the engine's workers join policy rank 0's broadcast group.
    def init_weight_broadcast(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        self.engine.init_weight_broadcast(host, port, rank_offset, world_size)

    def receive_weights(self, meta: list) -> None:
        self.engine.receive_weights(meta)
