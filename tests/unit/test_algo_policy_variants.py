"""Checks for GSPO's sequence ratio, loss aggregation (Dr. GRPO) and truncated importance weights."""

import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import aggregate_loss, ppo_policy_loss, resolve_loss_aggregation, truncated_is_weights


# ---------------------------------------------------------------- aggregation
def test_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 9.0], [3.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # row 2 has no valid token
    # token mean: (1 + 2 + 3) / 3 = 2
    assert_close(aggregate_loss(x, mask, "token_mean"), torch.tensor(2.0))
    # per-sequence means 1.5 and 3 (the empty row does not count) -> 2.25
    assert_close(aggregate_loss(x, mask, "seq_mean_token_mean"), torch.tensor(2.25))
    # token sums over B * R = 3 * 3: 6 / 9
    assert_close(aggregate_loss(x, mask, "seq_mean_token_sum_norm"), torch.tensor(6.0 / 9.0))
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        assert aggregate_loss(x, torch.zeros(3, 3), mode).item() == 0.0
    with pytest.raises(ValueError, match="loss aggregation must be one of"):
        aggregate_loss(x, mask, "sum")


def test_aggregation_sets_the_per_token_gradient_weight():
    # ratio 1 everywhere, A = 1 on both rows; row 0 has 1 token, row 1 has 3 (R = 3, B = 2)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    adv = torch.ones(2, 3)

    def run(mode):
        lp = torch.zeros(2, 3, requires_grad=True)
        loss, _ = ppo_policy_loss(lp, torch.zeros(2, 3), adv, mask, 0.2, aggregation=mode)
        loss.backward()
        return loss, lp.grad

    # token_mean: 4 tokens, each -1/4; loss -(1+1+1+1)/4 = -1
    loss, grad = run("token_mean")
    assert_close(loss, torch.tensor(-1.0))
    assert_close(grad, torch.tensor([[-0.25, 0, 0], [-0.25, -0.25, -0.25]]))
    # seq_mean_token_mean: -1/(B*len_i): the short answer's token weighs 3x more
    loss, grad = run("seq_mean_token_mean")
    assert_close(loss, torch.tensor(-1.0))
    assert_close(grad, torch.tensor([[-0.5, 0, 0], [-1 / 6, -1 / 6, -1 / 6]]))
    # seq_mean_token_sum_norm (Dr. GRPO): -1/(B*R) for every token, whatever the length; loss -4/6
    loss, grad = run("seq_mean_token_sum_norm")
    assert_close(loss, torch.tensor(-4.0 / 6.0))
    assert_close(grad, torch.full((2, 3), -1 / 6) * mask)


def test_resolve_aggregation_defaults_follow_the_papers():
    assert resolve_loss_aggregation(None, "gae", "ppo") == "token_mean"  # today's loss, unchanged
    assert resolve_loss_aggregation(None, "grpo", "ppo") == "token_mean"
    assert resolve_loss_aggregation(None, "dr_grpo", "ppo") == "seq_mean_token_sum_norm"
    assert resolve_loss_aggregation(None, "dr_grpo", "gspo") == "seq_mean_token_sum_norm"
    assert resolve_loss_aggregation(None, "grpo", "gspo") == "seq_mean_token_mean"
    assert resolve_loss_aggregation("token_mean", "dr_grpo", "ppo") == "token_mean"  # explicit wins


# ---------------------------------------------------------------- GSPO
def _gspo_example():
    old = torch.tensor([[-1.0, -2.0, 0.0], [-1.5, -0.5, -1.0]])
    delta = torch.tensor([[0.1, 0.3, 7.0], [-0.1, 0.1, -0.3]])  # 7.0 sits on padding
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([[1.0, 1.0, 0.0], [-2.0, -2.0, -2.0]])
    return old, delta, mask, adv


def test_gspo_sequence_ratio_by_hand():
    old, delta, mask, adv = _gspo_example()
    lp = (old + delta).requires_grad_(True)
    loss, stats = ppo_policy_loss(lp, old, adv, mask, 0.2, variant="gspo", aggregation="seq_mean_token_mean")
    # s_0 = exp(mean(0.1, 0.3)) = e^0.2 = 1.221403 > 1.2, A = +1 -> min(1.2214, 1.2) = 1.2 (clipped)
    # s_1 = exp(mean(-0.1, 0.1, -0.3)) = e^-0.1 = 0.904837, A = -2 -> -1.809675 (inside the clip)
    # seq_mean_token_mean: (1.2 - 1.809675) / 2 = -0.304837 -> loss 0.304837
    assert_close(loss, torch.tensor(0.304837), atol=1e-6, rtol=0)
    assert_close(stats["clipfrac"], torch.tensor(2 / 5))  # both tokens of row 0
    # token-weighted mean of s: (2 * 1.221403 + 3 * 0.904837) / 5 = 1.031463
    assert_close(stats["ratio_mean"], torch.tensor(1.031463), atol=1e-6, rtol=0)
    assert_close(stats["ratio_max"], torch.tensor(1.221403), atol=1e-6, rtol=0)
    loss.backward()
    # row 0 clipped -> 0; row 1: -(1/2) * A * s_1 / 3 = 2 * 0.904837 / 6 = 0.301612 per token
    assert_close(lp.grad, torch.tensor([[0.0, 0.0, 0.0], [0.301612] * 3]), atol=1e-6, rtol=0)


def test_gspo_matches_the_sequence_formula_brute_force():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    old = torch.randn(4, 5, generator=g)
    new = old + 0.15 * torch.randn(4, 5, generator=g)
    seq_adv = torch.randn(4, generator=g)
    adv = seq_adv.unsqueeze(1).expand(4, 5) * mask

    lp = new.clone().requires_grad_(True)
    loss, _ = ppo_policy_loss(lp, old, adv, mask, 0.1, variant="gspo", aggregation="seq_mean_token_mean")
    loss.backward()
    # GSPO as written in the paper: J = mean_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t (logp - old))
    ref_lp = new.clone().requires_grad_(True)
    s = torch.stack([((ref_lp[i] - old[i])[mask[i]]).mean().exp() for i in range(4)])
    ref = -torch.minimum(s * seq_adv, s.clamp(0.9, 1.1) * seq_adv).mean()
    ref.backward()
    assert_close(loss, ref)
    assert_close(lp.grad, ref_lp.grad)


def test_gspo_equals_ppo_on_one_token_sequences():
    lp = torch.tensor([[0.5], [-0.05], [0.1]])
    old, adv, mask = torch.zeros(3, 1), torch.tensor([[1.0], [-1.0], [2.0]]), torch.ones(3, 1)
    for agg in ("token_mean", "seq_mean_token_mean"):
        ppo, _ = ppo_policy_loss(lp, old, adv, mask, 0.2, aggregation=agg)
        gspo, _ = ppo_policy_loss(lp, old, adv, mask, 0.2, variant="gspo", aggregation=agg)
        assert_close(ppo, gspo)
    with pytest.raises(ValueError, match="policy loss variant"):
        ppo_policy_loss(lp, old, adv, mask, 0.2, variant="grpo")


def test_gspo_padding_garbage_is_ignored():
    old, delta, mask, adv = _gspo_example()
    bad = torch.where(mask.bool(), old + delta, torch.tensor(float("nan")))
    lp = bad.clone().requires_grad_(True)
    loss, _ = ppo_policy_loss(lp, old, adv, mask, 0.2, variant="gspo", aggregation="seq_mean_token_mean")
    loss.backward()
    assert_close(loss, torch.tensor(0.304837), atol=1e-6, rtol=0)
    assert not torch.isnan(lp.grad).any() and lp.grad[0, 2] == 0


# ---------------------------------------------------------------- truncated IS
def test_truncated_is_weights_by_hand():
    # pi_old / mu = 0.6/0.2 = 3, 0.5/0.5 = 1, 0.2/0.4 = 0.5; the last column is padding (e^100 if read)
    old = torch.log(torch.tensor([[0.6, 0.5, 0.2, 1.0]])).requires_grad_(True)
    behaviour = torch.tensor([[math.log(0.2), math.log(0.5), math.log(0.4), -100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w, stats = truncated_is_weights(old, behaviour, mask, cap=2.0)
    assert_close(w, torch.tensor([[2.0, 1.0, 0.5, 0.0]]))  # 3 truncated to the cap; padding 0
    assert not w.requires_grad
    # stats of the raw ratio: mean (3 + 1 + 0.5) / 3 = 1.5, max 3, 1 of 3 over the cap
    assert_close(stats["is_weight_mean"], torch.tensor(1.5))
    assert_close(stats["is_weight_max"], torch.tensor(3.0))
    assert_close(stats["is_clipped_frac"], torch.tensor(1 / 3))
    raw, stats = truncated_is_weights(old, behaviour, mask, cap=None)
    assert_close(raw, torch.tensor([[3.0, 1.0, 0.5, 0.0]]))
    assert stats["is_clipped_frac"].item() == 0.0


def test_on_policy_weights_are_one_and_leave_the_loss_unchanged():
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    old = torch.randn(2, 3, generator=g)
    new, adv = old + 0.1 * torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    w, stats = truncated_is_weights(old, old, mask, cap=2.0)
    assert_close(w, mask.float())
    assert stats["is_weight_max"].item() == 1.0 and stats["is_clipped_frac"].item() == 0.0

    def run(weights):
        lp = new.clone().requires_grad_(True)
        loss, _ = ppo_policy_loss(lp, old, adv, mask, 0.2, is_weights=weights)
        loss.backward()
        return loss, lp.grad

    loss_a, grad_a = run(None)
    loss_b, grad_b = run(w)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)


def test_is_weights_scale_each_token_and_get_no_gradient():
    # ratio 1, A = 1 on two tokens, w = [2, 0.5]: objective [2, 0.5], token mean 1.25
    lp = torch.zeros(1, 2, requires_grad=True)
    w = torch.tensor([[2.0, 0.5]], requires_grad=True)
    loss, stats = ppo_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 0.2, is_weights=w)
    assert_close(loss, torch.tensor(-1.25))
    loss.backward()
    assert_close(lp.grad, torch.tensor([[-1.0, -0.25]]))  # -w / 2
    assert w.grad is None
    assert stats["ratio_mean"].item() == 1.0  # diagnostics describe the ratio, not the weights
