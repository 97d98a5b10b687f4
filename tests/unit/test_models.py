"""Model construction: tiny models, scalar-head reward/critic, LoRA merge/export, built-ins."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel

from rlhf_dist.config.schema_parts import LoRAConfig, ModelConfig, RewardModelConfig
from rlhf_dist.models import (
    ScalarHeadModel,
    build_byte_tokenizer,
    export_merged,
    load_causal_lm,
    load_reward_model,
    pool_scores,
    resolve_model_path,
)

import pytest


def test_byte_tokenizer_round_trips_any_text():
    tok = build_byte_tokenizer()
    text = "héllo, wörld! 123 ✓"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))  # one id per byte, no merges
    assert tok.decode(ids) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_tiny_model_dir_loads_with_plain_transformers(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    out = model(**tok(["abc"], return_tensors="pt"))
    assert out.logits.shape == (1, 3, 259)


def test_pool_scores_last_and_mean():
    scores = torch.tensor([[1.0, 2.0, 3.0, 9.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert pool_scores(scores, mask, "last").tolist() == [3.0, 8.0]
    assert pool_scores(scores, mask, "mean").tolist() == [2.0, 7.0]  # (1+2+3)/3, (6+7+8)/3
    empty = torch.zeros_like(mask)
    assert pool_scores(scores, empty, "mean").tolist() == [0.0, 0.0]  # no NaN for an all-padding row


def test_reward_model_save_load_round_trip(tiny_llama_dir, tmp_path):
    torch.manual_seed(0)
    rm = load_reward_model(RewardModelConfig(path=str(tiny_llama_dir)))
    ids = torch.randint(3, 259, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    before = rm(ids, mask)
    assert before.shape == (3,)
    rm.save_pretrained(tmp_path / "rm")
    again = ScalarHeadModel.from_pretrained(tmp_path / "rm")
    assert torch.allclose(again(ids, mask), before, atol=1e-6)
    # padding beyond the last valid token must not change the score
    ids2 = ids.clone()
    ids2[0, 5:] = 0
    assert torch.allclose(again(ids2, mask)[0], before[0], atol=1e-5)


def test_scalar_head_on_encoder_backbone_mean_pooling(tmp_path):
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    model = ScalarHeadModel.from_pretrained(tmp_path / "bert", pooling="mean")
    ids = torch.randint(0, 50, (2, 6))
    assert model(ids, torch.ones_like(ids)).shape == (2,)
    assert model.token_scores(ids, torch.ones_like(ids)).shape == (2, 6)


def test_lora_policy_trains_adapters_only_and_merges_exactly(tiny_llama_dir, tmp_path):
    cfg = ModelConfig(path=str(tiny_llama_dir), lora=LoRAConfig(enabled=True, r=4))
    model = load_causal_lm(cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # one optimiser step so the adapters are non-zero
    ids = torch.randint(3, 259, (2, 8))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    export_merged(model, tmp_path / "merged", tokenizer=build_byte_tokenizer())
    # readable like its config.json (safetensors alone would leave the weights 0600)
    assert (tmp_path / "merged" / "model.safetensors").stat().st_mode & 0o777 == (
        tmp_path / "merged" / "config.json").stat().st_mode & 0o777
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-4)


def test_lora_on_reward_model_keeps_head_trainable(tiny_llama_dir):
    rm = load_reward_model(RewardModelConfig(path=str(tiny_llama_dir), lora=LoRAConfig(enabled=True)), trainable=True)
    names = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert "head.weight" in names  # bias-free like HF's `score` (see scalar_head.py)
    assert all(n.startswith("head.") or "lora_" in n for n in names)


def test_frozen_reference_has_no_trainable_params(tiny_llama_dir):
    ref = load_causal_lm(ModelConfig(path=str(tiny_llama_dir)), trainable=False)
    assert not any(p.requires_grad for p in ref.parameters())
    assert not ref.training


def test_resolve_model_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ValueError, match="known: builtin:tiny-llama"):
        resolve_model_path("builtin:gpt-17")


def test_builtin_tiny_is_cached_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DIST_CACHE", str(tmp_path))
    first = resolve_model_path("builtin:tiny-qwen2")
    again = resolve_model_path("builtin:tiny-qwen2")
    assert first == again and (first / "model.safetensors").is_file()
    assert AutoModelForCausalLM.from_pretrained(first).config.model_type == "qwen2"


@pytest.mark.slow
def test_smollm2_builtin_converts_and_knows_paris():
    path = resolve_model_path("builtin:smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) > 130e6
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])


def test_merged_state_dict_equals_peft_merge(tiny_llama_dir):
    from rlhf_dist.models.lora import merged_state_dict

    cfg = LoRAConfig(enabled=True, r=4, alpha=8)
    model = load_causal_lm(ModelConfig(path=str(tiny_llama_dir), lora=cfg))
    with torch.no_grad():  # make the adapters non-zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    folded = merged_state_dict({k: v.clone() for k, v in model.state_dict().items()}, cfg)
    reference = model.merge_and_unload().state_dict()
    assert set(folded) == set(reference)
    for name, tensor in reference.items():
        assert torch.allclose(folded[name], tensor, atol=1e-5), name
