"""The DPO objective on a real tiny Llama (models/dpo_objective.py): padded, stacked log-probs equal each
sequence's own, the policy against itself is log 2, and ties / soft votes from an A/B file become targets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf_dist.config import load_config
from rlhf_dist.data import PreferencePair, encode_pair
from rlhf_dist.data.files import load_encoded_pairs
from rlhf_dist.models import load_causal_lm, load_tokenizer
from rlhf_dist.models.dpo_objective import DPOExample, collate_dpo, dpo_objective, pair_logprobs


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    cfg = load_config(None, [f"policy.path={tiny_llama_dir}"])
    model = load_causal_lm(cfg.policy, tiny_llama_dir, trainable=True).eval()
    return cfg, model, load_tokenizer(tiny_llama_dir)


PAIRS = [PreferencePair(prompt="Review the cafe.", chosen="Lovely place!", rejected="No."),
         PreferencePair(prompt="Hi", chosen="a", rejected="a much longer answer than the other"),
         PreferencePair(prompt="A rather long prompt about nothing much", chosen="ok then", rejected="meh")]


def _own_logprob(model, ids: list[int], start: int) -> float:
    """log pi(ids[start:] | ids[:start]) from a forward over this sequence alone (no padding)."""
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    return float(lp[start - 1 :].sum())


@torch.no_grad()
def test_pair_logprobs_equal_each_sequence_alone(tiny):
    _, model, tok = tiny
    encoded = [encode_pair(tok, p, 128) for p in PAIRS]
    chosen, rejected, n_chosen, n_rejected = pair_logprobs(model, collate_dpo(
        [DPOExample(e, 0.0, 0.0) for e in encoded], tok.pad_token_id))
    for i, e in enumerate(encoded):
        assert chosen[i].item() == pytest.approx(_own_logprob(model, e.chosen.input_ids, e.chosen.response_start),
                                                 abs=1e-4)
        assert rejected[i].item() == pytest.approx(
            _own_logprob(model, e.rejected.input_ids, e.rejected.response_start), abs=1e-4)
        assert n_chosen[i] == len(e.chosen.input_ids) - e.chosen.response_start  # response + eos
        assert n_rejected[i] == len(e.rejected.input_ids) - e.rejected.response_start


def test_the_starting_policy_against_itself_is_log_2_and_ties_and_soft_votes_are_targets(tiny, tmp_path):
    cfg, model, tok = tiny
    ab = tmp_path / "ab.jsonl"
    ab.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "p", "response_a": "yes", "response_b": "no", "preference": 2},
        {"prompt": "q", "response_a": "fine", "response_b": "bad", "preference": 0, "p_a": 0.8},
        {"prompt": "r", "response_a": "x", "response_b": "good", "preference": 1}]))
    cfg = load_config(None, [f"policy.path={cfg.policy.path}", "data.pairs_format=ab", "data.tie_policy=half"])
    pairs = load_encoded_pairs(cfg, tok, ab, "ab", "train pairs")
    with torch.no_grad():
        batch = collate_dpo([DPOExample(p, 0.0, 0.0) for p in pairs], tok.pad_token_id)
        chosen, rejected, _, _ = pair_logprobs(model, batch)
    examples = [DPOExample(p, c, r) for p, c, r in zip(pairs, chosen.tolist(), rejected.tolist())]
    batch = collate_dpo(examples, tok.pad_token_id)
    assert batch["target"].tolist() == pytest.approx([0.5, 0.8, 1.0])
    for loss_name in ("sigmoid", "robust"):
        dpo = cfg.dpo.model_copy(update={"loss": loss_name, "label_smoothing": 0.1})
        loss, stats = dpo_objective(dpo)(model, batch)
        # h = 0 for every pair: the cross-entropy of sigmoid(0) against any target is log 2
        assert loss.item() == pytest.approx(math.log(2), abs=1e-5) and abs(stats["margin"]) < 1e-5
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        model.zero_grad()
