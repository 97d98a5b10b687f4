"""The DPO objective on a causal LM, shared by every rank of the DPO stage (workers/dpo.py).

    c, r, n_c, n_r = pair_logprobs(model, collate_pairs(pairs, pad_id))   # [B] each, one forward
    loss, stats = dpo_objective(cfg.dpo)(model, collate_dpo(examples, pad_id))

A pair's log-prob is log pi(response | prompt) summed over the response tokens (eos included: the
labels of collate_pairs, -100 on prompt and padding). Reference log-probs are computed once per pair
before training and travel with the examples (DPOExample), so no reference model runs during training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhf_dist.algo import logprobs_from_logits, preference_losses, reduce_dpo
from rlhf_dist.algo.dpo_registry import DPOLossInputs
from rlhf_dist.config.schema_dpo import DPOStageConfig
from rlhf_dist.data import EncodedPair, collate_pairs


@dataclass(frozen=True)
class DPOExample:
    """A tokenised pair with its reference log-probs (the starting policy's; 0 for a reference-free loss)."""

    pair: EncodedPair
    ref_chosen: float
    ref_rejected: float


def collate_dpo(examples: list[DPOExample], pad_id: int) -> dict[str, torch.Tensor]:
    """collate_pairs of the pairs plus ``ref_chosen_logps`` / ``ref_rejected_logps`` [B] (float32)."""
    out = collate_pairs([e.pair for e in examples], pad_id)
    out["ref_chosen_logps"] = torch.tensor([e.ref_chosen for e in examples], dtype=torch.float32)
    out["ref_rejected_logps"] = torch.tensor([e.ref_rejected for e in examples], dtype=torch.float32)
    return out


def pair_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """(chosen log-probs, rejected log-probs, chosen lengths, rejected lengths), [B] each, from ONE forward over
    chosen and rejected stacked (right padding to the wider side; the log-probs in float32)."""
    n = batch["chosen_input_ids"].shape[0]
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])

    def stack(key: str, pad: int) -> torch.Tensor:
        sides = [batch[f"{side}_{key}"] for side in ("chosen", "rejected")]
        return torch.cat([F.pad(t, (0, width - t.shape[1]), value=pad) for t in sides])  # [2B, L]

    out = model(input_ids=stack("input_ids", 0), attention_mask=stack("attention_mask", 0), use_cache=False)
    labels = stack("labels", -100)[:, 1:]  # position t predicts token t + 1
    valid = labels != -100
    logprobs = logprobs_from_logits(out.logits[:, :-1].float(), labels.clamp_min(0))  # [2B, L-1]
    sums, lengths = (logprobs * valid).sum(-1), valid.sum(-1)
    return sums[:n], sums[n:], lengths[:n], lengths[n:]


def dpo_inputs(model, batch: dict[str, torch.Tensor], cfg: DPOStageConfig) -> DPOLossInputs:
    chosen, rejected, n_chosen, n_rejected = pair_logprobs(model, batch)
    return DPOLossInputs(chosen, rejected, batch["ref_chosen_logps"].to(chosen), batch["ref_rejected_logps"].to(chosen),
                         n_chosen, n_rejected, batch["target"].to(chosen), cfg.beta, cfg.label_smoothing,
                         cfg.simpo_gamma)


def dpo_objective(cfg: DPOStageConfig) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]],
                                                   tuple[torch.Tensor, dict[str, float]]]:
    """The micro-batch loss of dpo.loss (weighted by the pairs' weights) and its stats (algo/dpo.py reduce_dpo)."""
    def objective(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x = dpo_inputs(model, batch, cfg)
        losses, chosen, rejected = preference_losses(cfg.loss, x)
        return reduce_dpo(losses, chosen, rejected, x.target, batch["weight"].to(losses))

    return objective
