"""Reward model / critic dirs that plain `AutoModelForSequenceClassification` loads (issue #12).

Decoders save as an HF classifier (backbone + `score.weight`): no missing keys, and HF's score on
the rightmost non-pad token equals ours on the last valid token, left-padded, right-padded and
with pad == eos. Encoders and mean pooling keep our own layout. Old dirs still load.
A reloaded model equals the saved one to 1e-6 absolute or relative: scores of ~14 differ by an ulp between
batch layouts on AVX2-only CPUs.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel

from rlhf_dist.config.schema_parts import CriticConfig
from rlhf_dist.models import ScalarHeadModel, build_byte_tokenizer, load_critic, make_tiny_model_dir
from rlhf_dist.models.scalar_head import HEAD_FORMAT, HEAD_META, HEAD_WEIGHTS, HF_LAYOUT, OWN_LAYOUT

EOS = 2
TEXTS = ["a", "good answer", "a much longer answer than the others"]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def decoder_dir(request, tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp(f"tiny-{request.param}"), arch=request.param, seed=0)


def fresh_rm(backbone_dir, seed: int = 0, pooling: str = "last") -> ScalarHeadModel:
    torch.manual_seed(seed)
    model = ScalarHeadModel(AutoModel.from_pretrained(backbone_dir), pooling=pooling).eval()
    with torch.no_grad():  # a head far from its small init, so a wrong token or lost head shows
        model.head.weight.normal_(std=1.0)
    return model


def batch(tokenizer, side: str) -> dict[str, torch.Tensor]:
    """Texts + eos (as our scoring formats them), padded by the tokenizer on `side`."""
    tokenizer.padding_side = side
    rows = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in TEXTS]
    return tokenizer.pad({"input_ids": rows}, return_tensors="pt")


def hf_load(model_dir):
    model, info = AutoModelForSequenceClassification.from_pretrained(model_dir, output_loading_info=True)
    return model.eval(), info


@torch.no_grad()
def hf_scores(model, enc) -> torch.Tensor:
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.squeeze(-1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_decoder_rm_loads_in_hf_with_no_missing_keys_and_same_scores(decoder_dir, tmp_path, side):
    rm = fresh_rm(decoder_dir)
    rm.save_pretrained(tmp_path / "rm", build_byte_tokenizer())
    assert json.loads((tmp_path / "rm" / HEAD_META).read_text())["layout"] == HF_LAYOUT
    assert not (tmp_path / "rm" / HEAD_WEIGHTS).exists()
    hf, info = hf_load(tmp_path / "rm")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == 0
    enc = batch(AutoTokenizer.from_pretrained(tmp_path / "rm"), side)
    assert (enc["attention_mask"] == 0).any()  # the batch really is padded
    with torch.no_grad():
        ours = rm(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(hf_scores(hf, enc), ours, atol=1e-5, rtol=0)
    again = ScalarHeadModel.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        torch.testing.assert_close(again(enc["input_ids"], enc["attention_mask"]), ours, atol=1e-6, rtol=1e-6)


def test_pad_equal_to_eos_gets_a_distinct_pad_so_hf_reads_the_eos(decoder_dir, tmp_path):
    tokenizer = build_byte_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # what load_tokenizer does for a tokenizer without a pad
    rm = fresh_rm(decoder_dir)
    rm.save_pretrained(tmp_path / "rm", tokenizer)
    assert tokenizer.pad_token_id == EOS  # the caller's tokenizer is left as it was
    saved_tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    hf, _ = hf_load(tmp_path / "rm")
    assert hf.config.pad_token_id == saved_tok.pad_token_id == 1  # bos: never the last token
    for side in ("left", "right"):
        enc = batch(saved_tok, side)
        with torch.no_grad():
            ours = rm(enc["input_ids"], enc["attention_mask"])
        torch.testing.assert_close(hf_scores(hf, enc), ours, atol=1e-5, rtol=0)
    # The case this guards: with pad == eos HF reads the token before the final eos.
    hf.config.pad_token_id = EOS
    enc = batch(tokenizer, "left")
    with torch.no_grad():
        ours = rm(enc["input_ids"], enc["attention_mask"])
    assert (hf_scores(hf, enc) - ours).abs().max() > 1e-3


def test_critic_saves_as_hf_classifier_and_reloads_per_token_values(tmp_path):
    policy = make_tiny_model_dir(tmp_path / "policy", seed=3)
    critic = load_critic(CriticConfig(), policy).eval()
    with torch.no_grad():
        critic.head.weight.normal_(std=1.0)
    critic.save_pretrained(tmp_path / "critic", build_byte_tokenizer())
    hf, info = hf_load(tmp_path / "critic")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    enc = batch(AutoTokenizer.from_pretrained(tmp_path / "critic"), "left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    again = ScalarHeadModel.from_pretrained(tmp_path / "critic")
    with torch.no_grad():
        values = critic(ids, mask, per_token=True)
        torch.testing.assert_close(again(ids, mask, per_token=True), values, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(hf_scores(hf, enc), values[:, -1], atol=1e-5, rtol=0)  # left padded: last column


def write_v1_dir(rm: ScalarHeadModel, out, bias: float) -> None:
    """The format before issue #12, written by hand: backbone dir + head file + json."""
    rm.backbone.save_pretrained(out)
    build_byte_tokenizer().save_pretrained(out)
    save_file({"weight": rm.head.weight.detach().clone(), "bias": torch.tensor([bias])}, out / HEAD_WEIGHTS)
    (out / HEAD_META).write_text(json.dumps({"format": HEAD_FORMAT, "pooling": "last"}))


def test_old_format_dir_loads_and_resaves_as_hf_classifier(tiny_llama_dir, tmp_path):
    rm = fresh_rm(tiny_llama_dir)
    write_v1_dir(rm, tmp_path / "old", bias=0.0)
    enc = batch(build_byte_tokenizer(), "left")
    old = ScalarHeadModel.from_pretrained(tmp_path / "old")
    assert old.head.bias is None  # a zero bias (all BT-trained RMs) is dropped
    with torch.no_grad():
        expected = rm(enc["input_ids"], enc["attention_mask"])
        torch.testing.assert_close(old(enc["input_ids"], enc["attention_mask"]), expected, atol=1e-6, rtol=1e-6)
    old.save_pretrained(tmp_path / "new", build_byte_tokenizer())
    hf, info = hf_load(tmp_path / "new")
    assert not info["missing_keys"]
    torch.testing.assert_close(hf_scores(hf, enc), expected, atol=1e-5, rtol=0)


def test_old_format_with_nonzero_bias_keeps_it_and_our_layout(tiny_llama_dir, tmp_path):
    rm = fresh_rm(tiny_llama_dir)
    write_v1_dir(rm, tmp_path / "old", bias=0.75)
    enc = batch(build_byte_tokenizer(), "right")
    old = ScalarHeadModel.from_pretrained(tmp_path / "old")
    with torch.no_grad():
        expected = rm(enc["input_ids"], enc["attention_mask"]) + 0.75
        torch.testing.assert_close(old(enc["input_ids"], enc["attention_mask"]), expected, atol=1e-6, rtol=1e-6)
    old.save_pretrained(tmp_path / "resaved")
    meta = json.loads((tmp_path / "resaved" / HEAD_META).read_text())
    assert meta["layout"] == OWN_LAYOUT and "bias" in meta["not_hf_because"]
    with torch.no_grad():
        got = ScalarHeadModel.from_pretrained(tmp_path / "resaved")(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_mean_pooling_keeps_our_layout(tiny_llama_dir, tmp_path):
    rm = fresh_rm(tiny_llama_dir, pooling="mean")
    rm.save_pretrained(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / HEAD_META).read_text())
    assert meta["format"] == HEAD_FORMAT and meta["layout"] == OWN_LAYOUT and "mean" in meta["not_hf_because"]
    enc = batch(build_byte_tokenizer(), "left")
    again = ScalarHeadModel.from_pretrained(tmp_path / "rm")
    assert again.pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(again(enc["input_ids"], enc["attention_mask"]),
                                   rm(enc["input_ids"], enc["attention_mask"]), atol=1e-6, rtol=1e-6)


def test_encoder_keeps_our_layout_because_hf_reads_cls_through_a_pooler(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=259, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=0)
    BertModel(config).save_pretrained(tmp_path / "bert")
    rm = fresh_rm(tmp_path / "bert")
    rm.save_pretrained(tmp_path / "rm")
    meta = json.loads((tmp_path / "rm" / HEAD_META).read_text())
    assert meta["layout"] == OWN_LAYOUT and "GenericForSequenceClassification" in meta["not_hf_because"]
    _, info = AutoModel.from_pretrained(tmp_path / "rm", output_loading_info=True)
    assert not info["missing_keys"]  # the backbone maps one to one
    _, info = hf_load(tmp_path / "rm")
    assert {"classifier.weight", "classifier.bias"} <= set(info["missing_keys"])  # HF's head does not
    enc = batch(build_byte_tokenizer(), "right")
    again = ScalarHeadModel.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        torch.testing.assert_close(again(enc["input_ids"], enc["attention_mask"]),
                                   rm(enc["input_ids"], enc["attention_mask"]), atol=1e-6, rtol=1e-6)


def test_unknown_head_format_names_the_file(tiny_llama_dir, tmp_path):
    rm = fresh_rm(tiny_llama_dir)
    rm.save_pretrained(tmp_path / "rm")
    (tmp_path / "rm" / HEAD_META).write_text(json.dumps({"format": "rlhf-dist-scalar-head/v9"}))
    with pytest.raises(ValueError, match=r"scalar_head.json: unknown scalar head format 'rlhf-dist-scalar-head/v9'"):
        ScalarHeadModel.from_pretrained(tmp_path / "rm")


def test_saving_with_unmerged_lora_is_refused(tiny_llama_dir, tmp_path):
    from rlhf_dist.config.schema_parts import LoRAConfig, RewardModelConfig
    from rlhf_dist.models import load_reward_model, merge_lora

    rm = load_reward_model(RewardModelConfig(path=str(tiny_llama_dir), lora=LoRAConfig(enabled=True, r=4)),
                           trainable=True)
    with pytest.raises(ValueError, match="backbone is a PeftModel; merge LoRA first"):
        rm.save_pretrained(tmp_path / "rm")
    merge_lora(rm).save_pretrained(tmp_path / "rm")
    _, info = hf_load(tmp_path / "rm")
    assert not info["missing_keys"] and not any("lora" in k for k in info["unexpected_keys"])
