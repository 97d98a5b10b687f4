"""Tokenisation, truncation and collation with a tiny local byte-level tokenizer (1 token per byte)."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlhf_dist.data.records import PreferencePair, SFTExample
from rlhf_dist.data.tokenize import (
    IGNORE_INDEX,
    EncodedExample,
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
)
from rlhf_dist.data.validate import DataValidationError

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _byte_tokenizer(chat_template=None):
    """Byte-level BPE without merges: every UTF-8 byte is one token; ids 256/257 are pad/eos."""
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({"<pad>": 256, "<eos>": 257})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    if chat_template:
        hf.chat_template = chat_template
    return hf


@pytest.fixture(scope="module")
def tok():
    return _byte_tokenizer()


@pytest.fixture(scope="module")
def chat_tok():
    return _byte_tokenizer(CHAT_TEMPLATE)


def test_plain_encoding_boundary_and_eos(tok):
    ex = encode_prompt_response(tok, "Hi ", "there", max_length=64)
    assert ex.response_start == 3 and len(ex.input_ids) == 3 + 5 + 1
    assert ex.input_ids[-1] == tok.eos_token_id
    assert tok.decode(ex.input_ids[: ex.response_start]) == "Hi "
    assert tok.decode(ex.input_ids[ex.response_start : -1]) == "there"


def test_chat_template_applied_when_present(tok, chat_tok):
    assert format_prompt(tok, "hello") == "hello"
    assert format_prompt(chat_tok, "hello") == "<|user|>hello\n<|assistant|>"
    ex = encode_prompt_response(chat_tok, "hello", "ok", max_length=64)
    assert chat_tok.decode(ex.input_ids[: ex.response_start]) == "<|user|>hello\n<|assistant|>"
    assert encode_prompt(chat_tok, "hello", max_length=5) == ex.input_ids[ex.response_start - 5 : ex.response_start]


def test_left_prompt_truncation_keeps_whole_response(tok):
    ex = encode_prompt_response(tok, "abcdefghij", "xyz", max_length=8)  # 10 prompt + 4 response
    assert len(ex.input_ids) == 8 and ex.response_start == 4 and ex.n_prompt_dropped == 6
    assert tok.decode(ex.input_ids[:4]) == "ghij"
    assert tok.decode(ex.input_ids[4:-1]) == "xyz"


def test_overlong_response_and_error_mode_raise(tok):
    with pytest.raises(OverlongError, match="response: 9 tokens exceeds max_length 8"):
        encode_prompt_response(tok, "p", "abcdefgh", max_length=8)
    with pytest.raises(OverlongError, match="response: 8 tokens leaves no room for the prompt"):
        encode_prompt_response(tok, "p", "abcdefg", max_length=8)  # needs >= 1 prompt token
    with pytest.raises(OverlongError, match="prompt: 10 prompt \\+ 4 response tokens exceeds max_length 8"):
        encode_prompt_response(tok, "abcdefghij", "xyz", max_length=8, truncation="error")


def test_sft_dataset_reports_overlong_rows_by_index(tok):
    records = [SFTExample(prompt="p", response="ok"), SFTExample(prompt="p", response="x" * 20),
               SFTExample(prompt="long prompt", response="ok")]
    with pytest.raises(DataValidationError) as exc:
        encode_sft_dataset(tok, records, max_length=8)
    assert [str(e) for e in exc.value.errors] == ["row 1: response: 21 tokens exceeds max_length 8"]
    result = encode_sft_dataset(tok, records, max_length=8, on_error="skip")
    assert len(result.examples) == 2 and result.n_truncated == 1
    assert result.summary() == "encoded 2 of 3 rows (1 prompts truncated), skipped 1"


def test_pair_encoding_shares_prompt_truncation(tok):
    pair = PreferencePair(prompt="abcdef", chosen="x", rejected="yyyy", weight=0.5, target=0.8)
    enc = encode_pair(tok, pair, max_length=7)  # longest side: 5 tokens -> 2 prompt tokens
    assert enc.chosen.input_ids[:2] == enc.rejected.input_ids[:2] == tok("ef")["input_ids"]
    assert (enc.chosen.response_start, enc.rejected.response_start) == (2, 2)
    assert (enc.target, enc.weight) == (0.8, 0.5)
    bad = [pair, PreferencePair(prompt="p", chosen="c" * 10, rejected="r" * 10)]
    result = encode_pair_dataset(tok, bad, max_length=7, on_error="skip")
    assert [str(e) for e in result.errors] == [
        "row 1: chosen: 11 tokens exceeds max_length 7",
        "row 1: rejected: 11 tokens exceeds max_length 7",
    ]


def test_collate_sft_labels_only_on_response(tok):
    batch = [encode_prompt_response(tok, "ab", "cd", 32), encode_prompt_response(tok, "abcd", "e", 32)]
    out = collate_sft(batch, pad_id=tok.pad_token_id)
    assert out["input_ids"].shape == (2, 6)
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    assert out["input_ids"][0, 5].item() == tok.pad_token_id
    labels = out["labels"]
    assert (labels[0] == IGNORE_INDEX).tolist() == [True, True, False, False, False, True]
    assert (labels[1] == IGNORE_INDEX).tolist() == [True, True, True, True, False, False]
    keep = labels != IGNORE_INDEX
    assert torch.equal(labels[keep], out["input_ids"][keep])


def test_collate_pairs_shapes_and_values(tok):
    pairs = [PreferencePair(prompt="ab", chosen="c", rejected="ddd", target=0.5, weight=2.0),
             PreferencePair(prompt="a", chosen="cccc", rejected="d")]
    out = collate_pairs([encode_pair(tok, p, 32) for p in pairs], pad_id=tok.pad_token_id)
    assert out["chosen_input_ids"].shape == (2, 6) and out["rejected_input_ids"].shape == (2, 6)
    assert out["chosen_attention_mask"].sum(1).tolist() == [4, 6]
    assert out["rejected_attention_mask"].sum(1).tolist() == [6, 3]
    assert out["target"].tolist() == [0.5, 1.0] and out["weight"].tolist() == [2.0, 1.0]
    assert out["target"].dtype == torch.float32
    assert (out["chosen_labels"][0] != IGNORE_INDEX).tolist() == [False, False, True, True, False, False]


def test_collate_prompts_left_and_right(tok):
    ids, mask = collate_prompts([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = collate_prompts([[1, 2, 3], [4]], pad_id=9, padding_side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="empty batch"):
        collate_sft([], pad_id=0)
    assert isinstance(encode_prompt_response(tok, "a", "b", 4), EncodedExample)
