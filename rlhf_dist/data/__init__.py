"""Data loading, validation, pair conversion, tokenisation and demo data.

The tokenisation names load on first use (PEP 562): they import torch, which the fast commands
(`config validate`, `plan`, `feedback stats`) must not pay for.
"""

from typing import TYPE_CHECKING, Any

from rlhf_dist.data.demo import (
    demo_ab_feedback,
    demo_pairs,
    demo_prompts,
    demo_ranked,
    demo_ratings,
    demo_sft,
    sentiment_score,
    write_demo_files,
)
from rlhf_dist.data.pairs import (
    PairConversion,
    PairLoadReport,
    ab_to_pairs,
    load_preference_pairs,
    ranked_to_pairs,
    ratings_to_pairs,
)
from rlhf_dist.data.readers import UnreadableRow, iter_raw_rows, write_jsonl
from rlhf_dist.data.records import (
    RECORD_MODELS,
    ABFeedback,
    ComparisonPair,
    PreferencePair,
    PromptOnly,
    RankedList,
    Rating,
    RecordKind,
    SFTExample,
    model_for,
)
from rlhf_dist.data.errors import DataFileError
from rlhf_dist.data.validate import (
    DataValidationError,
    LoadResult,
    RowError,
    load_records,
    validate_rows,
)

if TYPE_CHECKING:  # for type checkers and linters; at run time __getattr__ below loads them
    from rlhf_dist.data.tokenize import (
        IGNORE_INDEX,
        EncodedExample,
        EncodedPair,
        EncodeResult,
        OverlongError,
        collate_pairs,
        collate_prompts,
        collate_sft,
        encode_pair,
        encode_pair_dataset,
        encode_prompt,
        encode_prompt_response,
        encode_sft_dataset,
        format_prompt,
        pad_sequences,
    )

_TOKENIZE_NAMES = frozenset({
    "IGNORE_INDEX",
    "EncodedExample",
    "EncodedPair",
    "EncodeResult",
    "OverlongError",
    "collate_pairs",
    "collate_prompts",
    "collate_sft",
    "encode_pair",
    "encode_pair_dataset",
    "encode_prompt",
    "encode_prompt_response",
    "encode_sft_dataset",
    "format_prompt",
    "pad_sequences",
})

__all__ = [
    "ABFeedback",
    "ComparisonPair",
    "DataFileError",
    "DataValidationError",
    "EncodeResult",
    "EncodedExample",
    "EncodedPair",
    "IGNORE_INDEX",
    "LoadResult",
    "OverlongError",
    "PairConversion",
    "PairLoadReport",
    "PreferencePair",
    "PromptOnly",
    "RECORD_MODELS",
    "RankedList",
    "Rating",
    "RecordKind",
    "RowError",
    "SFTExample",
    "UnreadableRow",
    "ab_to_pairs",
    "collate_pairs",
    "collate_prompts",
    "collate_sft",
    "demo_ab_feedback",
    "demo_pairs",
    "demo_prompts",
    "demo_ranked",
    "demo_ratings",
    "demo_sft",
    "encode_pair",
    "encode_pair_dataset",
    "encode_prompt",
    "encode_prompt_response",
    "encode_sft_dataset",
    "format_prompt",
    "iter_raw_rows",
    "load_preference_pairs",
    "load_records",
    "model_for",
    "pad_sequences",
    "ranked_to_pairs",
    "ratings_to_pairs",
    "sentiment_score",
    "validate_rows",
    "write_demo_files",
    "write_jsonl",
]


def __getattr__(name: str) -> Any:
    if name in _TOKENIZE_NAMES:
        from rlhf_dist.data import tokenize

        return getattr(tokenize, name)
    raise AttributeError(f"module 'rlhf_dist.data' has no attribute {name!r}")
