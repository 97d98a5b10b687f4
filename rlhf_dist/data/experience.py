"""The typed batches that cross every boundary between the driver and the role workers.

One PPO step hands these, never dicts, to the actors (in the spirit of veRL's DataProto):

    RolloutBatch   engines -> driver        generated samples, packed, with their texts
    ModelInputs    driver -> policy/ref/critic   what a forward pass over the samples needs
    Experience     driver -> policy/critic  everything the PPO update needs (a ModelInputs plus targets)
    TrainStats     policy/critic -> driver  one rank's losses, grad norm, skipped updates and time

Layout of every sequence: [prompt, left-padded to P | response, right-padded to R].
Per-token tensors of the response are [B, R]; `action_mask` marks real response tokens.
Every tensor field is split along dim 0 by `shard` (one contiguous part per rank) and joined by `concat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

import torch

T = TypeVar("T", bound="TensorBatch")


@dataclass
class TensorBatch:
    """Base of the batches: every field is a tensor whose dim 0 is the sample."""

    def __len__(self) -> int:
        return getattr(self, fields(self)[0].name).shape[0]

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self: T, index: torch.Tensor | slice) -> T:
        """The samples at `index` (a micro-batch, a shard)."""
        return replace(self, **{k: v[index] for k, v in self._tensors().items()})

    def shard(self: T, n: int) -> list[T]:
        """n contiguous, near-equal parts along dim 0 (rank i gets part i)."""
        parts = {k: torch.tensor_split(v, n) for k, v in self._tensors().items()}
        return [replace(self, **{k: p[i] for k, p in parts.items()}) for i in range(n)]

    @classmethod
    def concat(cls: type[T], parts: list[T]) -> T:
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def to(self: T, device: torch.device | str) -> T:
        return replace(self, **{k: v.to(device) for k, v in self._tensors().items()})


@dataclass
class ModelInputs(TensorBatch):
    """A forward pass over packed samples."""

    sequences: torch.Tensor  # [B, P+R] long
    attention_mask: torch.Tensor  # [B, P+R] long
    action_mask: torch.Tensor  # [B, R] float: 1 on generated tokens

    @property
    def response_width(self) -> int:
        return self.action_mask.shape[1]

    def inputs(self) -> ModelInputs:
        """Only the forward-pass fields (what inference roles need; no training targets cross)."""
        return ModelInputs(self.sequences, self.attention_mask, self.action_mask)


@dataclass
class Experience(ModelInputs):
    """Everything the policy and critic updates need, for B samples."""

    old_logprobs: torch.Tensor  # [B, R] policy log-probs before the update (see ppo.old_logprobs)
    ref_logprobs: torch.Tensor  # [B, R] frozen reference log-probs
    values: torch.Tensor  # [B, R] critic values before the update (zeros without a critic)
    rewards: torch.Tensor  # [B, R] KL-shaped per-token rewards (score on the last token)
    advantages: torch.Tensor  # [B, R]
    returns: torch.Tensor  # [B, R]
    scores: torch.Tensor  # [B] sequence scores (after clipping/normalising)
    behaviour_logprobs: torch.Tensor  # [B, R] log-probs of the policy that sampled (the rollout engine's)


@dataclass
class RolloutBatch:
    """Generated samples, packed. B = prompts x samples_per_prompt (samples of a prompt adjacent)."""

    inputs: ModelInputs  # sequences, attention_mask, action_mask
    rollout_logprobs: torch.Tensor  # [B, R] behaviour log-probs reported by the rollout engine
    prompts: list[str]  # [B] prompt text (for text-level reward models)
    responses: list[str]  # [B] response text (special tokens stripped)

    def __len__(self) -> int:
        return len(self.inputs)

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The samples at `rows` (e.g. the informative groups of dynamic sampling), in that order."""
        picked = rows.tolist()
        return RolloutBatch(self.inputs.select(rows), self.rollout_logprobs[rows], [self.prompts[i] for i in picked],
                            [self.responses[i] for i in picked])


def concat_rollouts(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """One batch of several packed ones: prompts re-padded on the left, responses on the right, to the widest.

    Each batch is laid out as pack_samples does: [B, P+R], prompt left-padded to P, response right-padded to R."""
    width_r = max(b.inputs.response_width for b in batches)
    width_p = max(b.inputs.sequences.shape[1] - b.inputs.response_width for b in batches)

    def widen(x: torch.Tensor, left: int, right: int, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (left, right), value=value)

    parts = []
    for b in batches:
        left = width_p - (b.inputs.sequences.shape[1] - b.inputs.response_width)
        right = width_r - b.inputs.response_width
        inputs = ModelInputs(widen(b.inputs.sequences, left, right, pad_id),
                             widen(b.inputs.attention_mask, left, right, 0),
                             widen(b.inputs.action_mask, 0, right, 0.0))
        parts.append(RolloutBatch(inputs, widen(b.rollout_logprobs, 0, right, 0.0), b.prompts, b.responses))
    return RolloutBatch(ModelInputs.concat([p.inputs for p in parts]), torch.cat([p.rollout_logprobs for p in parts]),
                        [t for p in parts for t in p.prompts], [t for p in parts for t in p.responses])


@dataclass
class InferenceOutputs:
    """What the inference phase adds to a RolloutBatch, all [B, R]."""

    old_logprobs: torch.Tensor  # policy log-probs (recomputed, or the engine's; see ppo.old_logprobs)
    ref_logprobs: torch.Tensor  # reference log-probs
    values: torch.Tensor  # critic values (zeros without a critic)


@dataclass
class TrainStats:
    """One rank's result of a PPO update (`role/...` stats are means over its micro-batches)."""

    stats: dict[str, float] = field(default_factory=dict)  # e.g. policy/loss, policy/clipfrac, policy/grad_norm
    skipped_updates: int = 0  # optimizer steps skipped for non-finite gradients on this rank
    seconds: float = 0.0  # this rank's own training time


def pack_samples(samples: list, pad_id: int) -> tuple[ModelInputs, torch.Tensor]:
    """RolloutSamples -> (ModelInputs [B, P+R] / [B, R], behaviour log-probs [B, R])."""
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
    return ModelInputs(sequences, attention, action), logprobs
