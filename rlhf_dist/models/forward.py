"""Forward passes over packed experience: [left-padded prompt | right-padded response].

    sequences [B, L] = prompt part [B, P] (left-padded) + response part [B, R] (right-padded)

The logits at positions P-1 .. L-2 predict the response tokens at P .. L-1, so every
per-token quantity of the response (log-probs, entropy, values) is [B, R]. Position ids
come from the attention mask so left padding does not shift positions (vLLM and the
trainer then see the same positions and agree on log-probs).
"""

from __future__ import annotations

import torch

from rlhf_dist.algo import entropy_from_logits, logprobs_from_logits


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] mask -> [B, L] positions counting valid tokens only (padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logits(model, sequences: torch.Tensor, attention_mask: torch.Tensor, response_width: int) -> torch.Tensor:
    """Logits that predict each response token: [B, R, V]."""
    out = model(input_ids=sequences, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    logits = out.logits if hasattr(out, "logits") else out[0]  # [B, L, V]
    return logits[:, -response_width - 1 : -1, :]


def response_logprobs(
    model, sequences: torch.Tensor, attention_mask: torch.Tensor, response_width: int, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens [B, R] (float32), and their entropy [B, R] if asked."""
    logits = response_logits(model, sequences, attention_mask, response_width)  # [B, R, V]
    targets = sequences[:, -response_width:]  # [B, R]
    logprobs = logprobs_from_logits(logits, targets)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logprobs, entropy


def response_values(critic, sequences: torch.Tensor, attention_mask: torch.Tensor, response_width: int) -> torch.Tensor:
    """V(s_t) for each response token: the critic's score at the position before it, [B, R]."""
    scores = critic(sequences, attention_mask, per_token=True)  # [B, L]
    return scores[:, -response_width - 1 : -1]


@torch.no_grad()
def chunked_response_logprobs(
    model, sequences: torch.Tensor, attention_mask: torch.Tensor, response_width: int, chunk_size: int,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """response_logprobs over [B, L] in chunks of `chunk_size` rows (bounded activation memory).

    Inputs may live anywhere; each chunk moves to the model's device. Returns float32 CPU tensors [B, R]."""
    device = next(model.parameters()).device
    logprobs, entropy = [], []
    for start in range(0, sequences.shape[0], chunk_size):
        seqs = sequences[start : start + chunk_size].to(device)
        mask = attention_mask[start : start + chunk_size].to(device)
        lp, ent = response_logprobs(model, seqs, mask, response_width, with_entropy=with_entropy)
        logprobs.append(lp.float().cpu())
        if ent is not None:
            entropy.append(ent.float().cpu())
    return torch.cat(logprobs), (torch.cat(entropy) if entropy else None)
