"""The supervised objectives of SFT and reward-model training, shared by the one-process stage and
the ranks of a Ray + DeepSpeed group (workers/supervised.py).

    nll, n = response_nll(model, batch)        # summed NLL over response tokens, their count
    chosen, rejected = score_pairs(rm, batch)  # [B], [B] from one forward over both sides

`model` is the module or the DeepSpeed engine wrapping it (a forward through the engine, so ZeRO-3's
hooks run).
"""

from __future__ import annotations

import torch

from rlhf_dist.algo import bradley_terry_loss, pairwise_accuracy


def response_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed NLL over response tokens and their count (labels -100 elsewhere)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits[:, :-1].float()  # [B, L-1, V] predicts tokens 1..L-1
    labels = batch["labels"][:, 1:]  # [B, L-1]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    return nll, int((labels != -100).sum())


def sft_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean NLL per response token of the micro-batch."""
    nll, n_tokens = response_nll(model, batch)
    return nll / max(n_tokens, 1), {"response_tokens": float(n_tokens)}


def score_pairs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over chosen+rejected stacked (one pass, shared padding) -> ([B], [B])."""
    n = batch["chosen_input_ids"].shape[0]
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    ids = torch.cat([pad(batch["chosen_input_ids"]), pad(batch["rejected_input_ids"])])  # [2B, L]
    mask = torch.cat([pad(batch["chosen_attention_mask"]), pad(batch["rejected_attention_mask"])])
    scores = model(ids, mask)  # [2B]
    return scores[:n], scores[n:]


def bradley_terry_objective(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The BT loss of a micro-batch of preference pairs (ties: target 0.5) and its accuracy."""
    chosen, rejected = score_pairs(model, batch)
    loss = bradley_terry_loss(chosen, rejected, batch["target"], batch["weight"])
    return loss, {"accuracy": pairwise_accuracy(chosen, rejected, batch["target"])}
