"""The tensors handed between roles in one PPO step.

Layout of every sequence: [prompt, left-padded to P | response, right-padded to R].
Per-token tensors of the response are [B, R]; `action_mask` marks real response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class RolloutBatch:
    """Generated samples, packed. B = prompts x samples_per_prompt (samples of a prompt adjacent)."""

    sequences: torch.Tensor  # [B, P+R] long
    attention_mask: torch.Tensor  # [B, P+R] long
    action_mask: torch.Tensor  # [B, R] float: 1 on generated tokens
    rollout_logprobs: torch.Tensor  # [B, R] behaviour log-probs reported by the rollout engine
    prompts: list[str]  # [B] prompt text (for text-level reward models)
    responses: list[str]  # [B] response text (special tokens stripped)

    @property
    def response_width(self) -> int:
        return self.action_mask.shape[1]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"sequences": self.sequences, "attention_mask": self.attention_mask, "action_mask": self.action_mask}


@dataclass
class Experience:
    """Everything the policy and critic updates need, for B samples."""

    sequences: torch.Tensor  # [B, P+R]
    attention_mask: torch.Tensor  # [B, P+R]
    action_mask: torch.Tensor  # [B, R]
    old_logprobs: torch.Tensor  # [B, R] policy log-probs before the update (see ppo.old_logprobs)
    ref_logprobs: torch.Tensor  # [B, R] frozen reference log-probs
    values: torch.Tensor  # [B, R] critic values before the update (zeros without a critic)
    rewards: torch.Tensor  # [B, R] KL-shaped per-token rewards (score on the last token)
    advantages: torch.Tensor  # [B, R]
    returns: torch.Tensor  # [B, R]
    scores: torch.Tensor  # [B] sequence scores (after clipping/normalising)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def pack_samples(samples: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """RolloutSamples -> (sequences [B, P+R], attention_mask [B, P+R], action_mask [B, R], logprobs [B, R])."""
    width_p = max(len(s.prompt_ids) for s in samples)
    width_r = max(1, max(len(s.response_ids) for s in samples))
    n = len(samples)
    sequences = torch.full((n, width_p + width_r), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width_p + width_r), dtype=torch.long)
    action = torch.zeros((n, width_r), dtype=torch.float32)
    logprobs = torch.zeros((n, width_r), dtype=torch.float32)
    for i, s in enumerate(samples):
        p, r = len(s.prompt_ids), len(s.response_ids)
        sequences[i, width_p - p : width_p] = torch.tensor(s.prompt_ids)
        attention[i, width_p - p : width_p] = 1
        if r:
            sequences[i, width_p : width_p + r] = torch.tensor(s.response_ids)
            attention[i, width_p : width_p + r] = 1
            action[i, :r] = 1.0
            logprobs[i, :r] = torch.tensor(s.logprobs, dtype=torch.float32)
    return sequences, attention, action, logprobs


def shard(batch: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    """Split every tensor along dim 0 into n contiguous, near-equal shards."""
    parts = {k: torch.tensor_split(v, n) for k, v in batch.items()}
    return [{k: parts[k][i] for k in batch} for i in range(n)]
