"""Score (prompt, response) TEXT with a trained reward model, formatted like its training pairs.

Shared by the PPO reward actor (workers/inference.py) and the offline evaluation (eval/), so
both feed the reward model exactly what it was trained on: the chat-formatted prompt plus the
response and eos, left-truncated to `max_length`, tokenised with the reward model's own tokenizer.
"""

from __future__ import annotations

import torch

from rlhf_dist.data.tokenize import encode_prompt_response, pad_sequences


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
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    encoded = [encode_prompt_response(tokenizer, p, r, max_length, "left_prompt").input_ids
               for p, r in zip(prompts, responses)]
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        ids = pad_sequences(chunk, tokenizer.pad_token_id).to(device)
        mask = pad_sequences([[1] * len(c) for c in chunk], 0).to(device)
        scores += model(ids, mask).float().cpu().tolist()
    return scores
