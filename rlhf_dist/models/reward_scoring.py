"""Score (prompt, response) TEXT with a trained reward model, formatted like its training pairs.

Shared by the PPO reward actor (workers/inference.py) and the offline evaluation (eval/), so
both feed the reward model exactly what it was trained on: the chat-formatted prompt plus the
response and eos, left-truncated to `max_length`, tokenised with the reward model's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rlhf_dist.data.tokenize import encode_prompt_response, pad_sequences


def _padded_batches(tokenizer, prompts: list[str], responses: list[str], max_length: int,
                    device: torch.device | str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(ids [b, T], mask [b, T]) right-padded chunks of the formatted (prompt, response) pairs."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encode_prompt_response(tokenizer, p, r, max_length, "left_prompt").input_ids
               for p, r in zip(prompts, responses)]
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        yield (pad_sequences(chunk, tokenizer.pad_token_id).to(device),
               pad_sequences([[1] * len(c) for c in chunk], 0).to(device))


@torch.no_grad()
def score_texts(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
) -> list[float]:
    """One scalar per (prompt, response): `model(ids [b, T], mask [b, T]) -> [b]` over right-padded chunks."""
    scores: list[float] = []
    for ids, mask in _padded_batches(tokenizer, prompts, responses, max_length, device, batch_size):
        scores += model(ids, mask).float().cpu().tolist()
    return scores


@torch.no_grad()
def pooled_features(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    responses: list[str],
    max_length: int,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
) -> torch.Tensor:
    """[N, H] backbone features pooled as the reward model pools its scores (its head is linear in them).

    Extra reward heads on these features (active selection's ensembles) score exactly as a head would.
    """
    from rlhf_dist.models.scalar_head import pool_hidden

    chunks = []
    for ids, mask in _padded_batches(tokenizer, prompts, responses, max_length, device, batch_size):
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = model.backbone(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        chunks.append(pool_hidden(hidden.float(), mask, model.pooling).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, model.config.hidden_size)
