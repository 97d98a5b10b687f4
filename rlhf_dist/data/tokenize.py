"""Tokenise prompts/responses and collate them into padded tensor batches.

Prompt and response are tokenised separately and concatenated, so the
boundary (``response_start``) is exact and SFT/DPO losses can be restricted
to response tokens.  Over-long rows are never silently cut inside the
response: either the prompt is shortened from the left or the row is
reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence, TypeVar

import torch

from rlhf_dist.data.records import PreferencePair, SFTExample
from rlhf_dist.data.validate import DataValidationError, OnError, RowError

Truncation = Literal["left_prompt", "error"]
IGNORE_INDEX = -100  # label value ignored by torch cross-entropy
T = TypeVar("T")


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + response (+ eos); ids from ``response_start`` on are the response."""

    input_ids: list[int]
    response_start: int
    n_prompt_dropped: int = 0


@dataclass(frozen=True)
class EncodedPair:
    """A tokenised preference pair; both sides share the same (possibly truncated) prompt."""

    chosen: EncodedExample
    rejected: EncodedExample
    target: float = 1.0
    weight: float = 1.0


class OverlongError(ValueError):
    """A row does not fit ``max_length``; ``problems`` holds ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {p}" for f, p in problems))


@dataclass
class EncodeResult:
    """Encoded rows plus the errors of rows that did not fit."""

    examples: list[Any]
    errors: list[RowError] = field(default_factory=list)
    n_rows: int = 0
    n_truncated: int = 0

    def summary(self) -> str:
        """One log line, e.g. ``"encoded 98 of 100 rows (3 prompts truncated), skipped 2"``."""
        skipped = len({e.location for e in self.errors})
        return (
            f"encoded {len(self.examples)} of {self.n_rows} rows "
            f"({self.n_truncated} prompts truncated), skipped {skipped}"
        )


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """Wrap ``prompt`` in the tokenizer's chat template as a user turn, if it has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


def encode_prompt(tokenizer: Any, prompt: str, max_length: int | None = None) -> list[int]:
    """Token ids of the formatted prompt, left-truncated to ``max_length`` if given (for generation)."""
    # A chat template already writes BOS-like markers itself; plain prompts get the model's specials.
    use_specials = not getattr(tokenizer, "chat_template", None)
    ids = list(tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=use_specials)["input_ids"])
    return ids[-max_length:] if max_length is not None and len(ids) > max_length else ids


def _encode_response(tokenizer: Any, response: str) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token_id; responses must end with eos")
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def _fit_prompt(
    prompt_ids: list[int], response_lens: dict[str, int], max_length: int, truncation: Truncation
) -> list[int]:
    """Return the prompt ids to keep so every response fits, or raise :class:`OverlongError`."""
    if truncation not in ("left_prompt", "error"):
        raise ValueError(f"truncation must be 'left_prompt' or 'error', got {truncation!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    problems = []
    for name, n in response_lens.items():  # counts include the eos token
        if n > max_length:
            problems.append((name, f"{n} tokens exceeds max_length {max_length}"))
        elif n == max_length:
            problems.append((name, f"{n} tokens leaves no room for the prompt within max_length {max_length}"))
    if problems:
        raise OverlongError(problems)
    budget = max_length - max(response_lens.values())
    if len(prompt_ids) <= budget:
        return prompt_ids
    if truncation == "error":
        longest = max(response_lens.values())
        raise OverlongError(
            [("prompt", f"{len(prompt_ids)} prompt + {longest} response tokens exceeds max_length {max_length}")]
        )
    return prompt_ids[-budget:]


def encode_prompt_response(
    tokenizer: Any, prompt: str, response: str, max_length: int, truncation: Truncation = "left_prompt"
) -> EncodedExample:
    """Encode ``prompt`` (chat-formatted) + ``response`` + eos within ``max_length`` tokens.

    ``truncation="left_prompt"`` drops prompt tokens from the left, keeping at
    least one prompt token and the whole response; :class:`OverlongError` is
    raised when the response alone does not fit or ``truncation="error"``.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    response_ids = _encode_response(tokenizer, response)
    kept = _fit_prompt(prompt_ids, {"response": len(response_ids)}, max_length, truncation)
    return EncodedExample(kept + response_ids, len(kept), len(prompt_ids) - len(kept))


def encode_pair(
    tokenizer: Any, pair: PreferencePair, max_length: int, truncation: Truncation = "left_prompt"
) -> EncodedPair:
    """Encode both sides of a pair, truncating the prompt identically so they stay comparable."""
    prompt_ids = encode_prompt(tokenizer, pair.prompt)
    chosen = _encode_response(tokenizer, pair.chosen)
    rejected = _encode_response(tokenizer, pair.rejected)
    kept = _fit_prompt(prompt_ids, {"chosen": len(chosen), "rejected": len(rejected)}, max_length, truncation)
    dropped = len(prompt_ids) - len(kept)
    return EncodedPair(
        EncodedExample(kept + chosen, len(kept), dropped),
        EncodedExample(kept + rejected, len(kept), dropped),
        target=pair.target,
        weight=pair.weight,
    )


def _encode_all(records: Sequence[Any], encode: Callable[[Any], T], on_error: OnError, what: str,
                locations: Sequence[str] | None = None) -> EncodeResult:
    if locations is not None and len(locations) != len(records):
        raise ValueError(f"{len(locations)} locations for {len(records)} records")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    result = EncodeResult(examples=[], n_rows=len(records))
    for i, record in enumerate(records):
        try:
            encoded = encode(record)
        except OverlongError as e:
            where = locations[i] if locations is not None else f"row {i}"  # file:line when the caller knows it
            result.errors.extend(RowError(where, f, p) for f, p in e.problems)
            continue
        first = encoded.chosen if isinstance(encoded, EncodedPair) else encoded
        result.n_truncated += first.n_prompt_dropped > 0
        result.examples.append(encoded)
    if result.errors and on_error == "fail":
        raise DataValidationError(result.errors, source=what)
    return result


def encode_sft_dataset(
    tokenizer: Any,
    records: Sequence[SFTExample],
    max_length: int,
    truncation: Truncation = "left_prompt",
    on_error: OnError = "fail",
    locations: Sequence[str] | None = None,
) -> EncodeResult:
    """Encode SFT examples; over-long rows are reported at ``locations[i]`` (else ``row N``), fail or skip."""
    return _encode_all(
        records,
        lambda r: encode_prompt_response(tokenizer, r.prompt, r.response, max_length, truncation),
        on_error,
        "SFT dataset",
        locations,
    )


def encode_pair_dataset(
    tokenizer: Any,
    records: Sequence[PreferencePair],
    max_length: int,
    truncation: Truncation = "left_prompt",
    on_error: OnError = "fail",
    locations: Sequence[str] | None = None,
) -> EncodeResult:
    """Encode preference pairs; over-long rows are reported at ``locations[i]`` (file:line; else ``row N``)."""
    return _encode_all(records, lambda r: encode_pair(tokenizer, r, max_length, truncation), on_error,
                       "pair dataset", locations)


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_value: int, side: Literal["left", "right"] = "right"
) -> torch.Tensor:
    """Stack ragged id lists into a ``[B, L]`` long tensor padded on ``side``."""
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        start = 0 if side == "right" else width - len(s)
        out[i, start : start + len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def _mask(seqs: Sequence[Sequence[int]], side: Literal["left", "right"] = "right") -> torch.Tensor:
    return pad_sequences([[1] * len(s) for s in seqs], 0, side)


def _labels(batch: Sequence[EncodedExample]) -> torch.Tensor:
    # Loss only on response tokens: prompt and padding are IGNORE_INDEX.
    labels = pad_sequences([e.input_ids for e in batch], IGNORE_INDEX)
    for i, e in enumerate(batch):
        labels[i, : e.response_start] = IGNORE_INDEX
    return labels


def collate_sft(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 off the response)."""
    seqs = [e.input_ids for e in batch]
    return {"input_ids": pad_sequences(seqs, pad_id), "attention_mask": _mask(seqs), "labels": _labels(batch)}


def collate_pairs(batch: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded chosen/rejected ids, masks and labels, plus ``target`` and ``weight`` ``[B]``."""
    out: dict[str, torch.Tensor] = {}
    for side in ("chosen", "rejected"):
        examples = [getattr(p, side) for p in batch]
        seqs = [e.input_ids for e in examples]
        out[f"{side}_input_ids"] = pad_sequences(seqs, pad_id)
        out[f"{side}_attention_mask"] = _mask(seqs)
        out[f"{side}_labels"] = _labels(examples)
    out["target"] = torch.tensor([p.target for p in batch], dtype=torch.float32)
    out["weight"] = torch.tensor([p.weight for p in batch], dtype=torch.float32)
    return out


def collate_prompts(
    prompts: Sequence[Sequence[int]], pad_id: int, padding_side: Literal["left", "right"] = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad prompt id lists for generation (left by default, so new tokens follow directly)."""
    return pad_sequences(prompts, pad_id, padding_side), _mask(prompts, padding_side)
