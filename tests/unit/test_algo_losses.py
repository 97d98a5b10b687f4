"""Checks for Bradley-Terry, PPO policy/value losses and logits helpers."""

import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import (
    bradley_terry_loss,
    entropy_from_logits,
    gae,
    logprobs_from_logits,
    ppo_policy_loss,
    value_loss,
)

LN2 = math.log(2.0)


def ppo_one_token(ratio, adv, eps=0.2, dual_clip=None):
    lp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, stats = ppo_policy_loss(lp, torch.zeros(1, 1), torch.tensor([[adv]]),
                                  torch.ones(1, 1), eps, dual_clip)
    return loss, stats, lp


# ---------------------------------------------------------------- worked example
def test_worked_example_gae_then_clipped_ppo():
    # A = r + gamma * 0 - V = 5 - 1.5 = 3.5 (single terminal token, lambda = 1)
    adv, _ = gae(torch.tensor([[5.0]]), torch.tensor([[1.5]]), torch.ones(1, 1), 0.9, 1.0)
    assert_close(adv, torch.tensor([[3.5]]))
    new = torch.tensor([[math.log(0.75)]], requires_grad=True)
    old = torch.tensor([[math.log(0.60)]])
    loss, stats = ppo_policy_loss(new, old, adv, torch.ones(1, 1), clip_eps=0.2)
    # ratio = 0.75 / 0.60 = 1.25; min(1.25*3.5 = 4.375, 1.2*3.5 = 4.2) = 4.2
    assert_close(stats["ratio_mean"], torch.tensor(1.25))
    assert_close(loss, torch.tensor(-4.2))
    assert stats["clipfrac"].item() == 1.0
    loss.backward()
    assert new.grad.item() == 0.0  # clipped branch -> no gradient


# ---------------------------------------------------------------- Bradley-Terry
def test_bt_zero_margin_is_log2_and_known_value():
    assert_close(bradley_terry_loss(torch.zeros(3), torch.zeros(3)), torch.tensor(LN2))
    # -logsigmoid(2) = log(1 + e^-2) = 0.126928
    assert_close(bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])),
                 torch.tensor(0.126928), atol=1e-6, rtol=0)


def test_bt_tie_target_symmetric_with_minimum_at_zero():
    def tie_loss(d):
        return bradley_terry_loss(torch.tensor([d]), torch.tensor([0.0]),
                                  target=torch.tensor([0.5]))

    # -0.5 * (logsig(d) + logsig(-d)) is even in d, ln 2 at d = 0, larger elsewhere
    assert_close(tie_loss(0.0), torch.tensor(LN2))
    assert_close(tie_loss(0.7), tie_loss(-0.7))
    assert tie_loss(0.7) > tie_loss(0.0)
    c = torch.zeros(1, requires_grad=True)
    bradley_terry_loss(c, torch.zeros(1), target=torch.tensor([0.5])).backward()
    assert abs(c.grad.item()) < 1e-7


def test_bt_weights():
    chosen, rejected = torch.tensor([0.0, 2.0]), torch.zeros(2)
    # (1*ln2 + 3*0.126928) / (1+3) = (0.693147 + 0.380784) / 4 = 0.268483
    out = bradley_terry_loss(chosen, rejected, weights=torch.tensor([1.0, 3.0]))
    assert_close(out, torch.tensor(0.268483), atol=1e-6, rtol=0)
    assert bradley_terry_loss(chosen, rejected, weights=torch.zeros(2)).item() == 0.0


def test_bt_gradient_pushes_chosen_up_rejected_down():
    c = torch.zeros(1, requires_grad=True)
    r = torch.zeros(1, requires_grad=True)
    bradley_terry_loss(c, r).backward()
    # dL/dd = -(1 - sigmoid(0)) = -0.5
    assert_close(c.grad, torch.tensor([-0.5]))
    assert_close(r.grad, torch.tensor([0.5]))


# ---------------------------------------------------------------- PPO policy
@pytest.mark.parametrize(
    "ratio, adv, objective, clipped",
    [
        (1.5, 1.0, 1.2, 1.0),    # A>0, ratio > 1+eps: min(1.5, 1.2) -> clipped
        (0.5, 1.0, 0.5, 0.0),    # A>0, ratio < 1-eps: min(0.5, 0.8) -> unclipped
        (1.5, -1.0, -1.5, 0.0),  # A<0, ratio > 1+eps: min(-1.5, -1.2) -> unclipped
        (0.5, -1.0, -0.8, 1.0),  # A<0, ratio < 1-eps: min(-0.5, -0.8) -> clipped
        (1.1, 2.0, 2.2, 0.0),    # inside the trust region: 1.1 * 2
    ],
)
def test_ppo_clip_cases(ratio, adv, objective, clipped):
    loss, stats, _ = ppo_one_token(ratio, adv)
    assert_close(loss, torch.tensor(-objective))
    assert stats["clipfrac"].item() == clipped


def test_ppo_dual_clip_on_negative_advantage():
    # A = -1, ratio 5: standard objective min(-5, -1.2) = -5 -> loss 5
    assert_close(ppo_one_token(5.0, -1.0)[0], torch.tensor(5.0))
    # dual clip c = 3: max(-5, 3 * -1) = -3 -> loss 3, and gradient is cut
    loss, stats, lp = ppo_one_token(5.0, -1.0, dual_clip=3.0)
    assert_close(loss, torch.tensor(3.0))
    assert stats["dual_clipfrac"].item() == 1.0
    loss.backward()
    assert lp.grad.item() == 0.0
    # ratio 2: objective -2 is above the floor -3, unchanged
    assert_close(ppo_one_token(2.0, -1.0, dual_clip=3.0)[0], torch.tensor(2.0))
    # positive advantages are never dual-clipped: min(5, 1.2) = 1.2
    assert_close(ppo_one_token(5.0, 1.0, dual_clip=3.0)[0], torch.tensor(-1.2))
    with pytest.raises(ValueError):
        ppo_one_token(1.0, 1.0, dual_clip=0.5)


def test_ppo_stats_by_hand():
    ratios = torch.tensor([[1.25, 1.0, 0.9, 7.0]])
    old = torch.zeros(1, 4)
    adv = torch.ones(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = ppo_policy_loss(ratios.log(), old, adv, mask, clip_eps=0.2)
    # objectives: min(1.25, 1.2) = 1.2, 1.0, 0.9 -> mean 3.1/3
    assert_close(loss, torch.tensor(-3.1 / 3))
    assert_close(stats["clipfrac"], torch.tensor(1 / 3))
    assert_close(stats["ratio_mean"], torch.tensor((1.25 + 1.0 + 0.9) / 3))
    assert_close(stats["ratio_max"], torch.tensor(1.25))  # 7.0 is padding
    # k3(old||new) = ratio - 1 - ln ratio: 0.25 - 0.223144 = 0.026856,
    # 0, -0.1 + 0.105361 = 0.005361 -> mean 0.010739
    assert_close(stats["approx_kl"], torch.tensor(0.010739), atol=1e-6, rtol=0)
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())


def test_ppo_padding_does_not_change_loss_or_grad():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    lp = torch.randn(2, 4, generator=g) * 0.1
    old = torch.randn(2, 4, generator=g) * 0.1
    adv = torch.randn(2, 4, generator=g)

    def run(lp_in, adv_in):
        x = lp_in.clone().requires_grad_(True)
        loss, _ = ppo_policy_loss(x, old, adv_in, mask, clip_eps=0.2)
        loss.backward()
        return loss, x.grad

    loss_a, grad_a = run(lp, adv)
    garbage = torch.full_like(lp, float("nan"))
    loss_b, grad_b = run(torch.where(mask, lp, garbage), torch.where(mask, adv, 1e9))
    assert_close(loss_a, loss_b)
    assert_close(grad_a, grad_b)
    assert torch.equal(grad_b[~mask], torch.zeros(2))


def test_ppo_all_masked_is_zero_not_nan():
    loss, stats = ppo_policy_loss(torch.zeros(1, 2, requires_grad=True), torch.zeros(1, 2),
                                  torch.ones(1, 2), torch.zeros(1, 2), 0.2)
    assert loss.item() == 0.0
    assert not any(torch.isnan(v) for v in stats.values())


# ---------------------------------------------------------------- value loss
def test_value_loss_clipped_vs_unclipped_by_hand():
    v = torch.tensor([[2.0, 1.1, 50.0]], requires_grad=True)
    old = torch.tensor([[1.0, 1.0, 0.0]])
    ret = torch.tensor([[3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: unclipped (2-3)^2 = 1; v_clip = 1 + 0.2 = 1.2 -> (1.2-3)^2 = 3.24
    # token 1: unclipped 1.1^2 = 1.21; v - old = 0.1 inside the clip -> 1.21
    loss, stats = value_loss(v, old, ret, mask, clip_eps=0.2)
    assert_close(loss, torch.tensor(0.5 * (3.24 + 1.21) / 2))  # 1.1125
    assert_close(stats["value_clipfrac"], torch.tensor(0.5))
    loss.backward()
    # token 0 uses the clipped (constant) branch -> zero grad; token 1:
    # d/dv 0.5 * mean(v^2) = v / 2 = 0.55; padding 0
    assert_close(v.grad, torch.tensor([[0.0, 0.55, 0.0]]))
    plain, stats = value_loss(v, old, ret, mask, clip_eps=None)
    assert_close(plain, torch.tensor(0.5 * (1.0 + 1.21) / 2))  # 0.5525
    assert stats["value_clipfrac"].item() == 0.0


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    _, stats = value_loss(ret.clone(), ret, ret, mask, None)
    assert_close(stats["explained_variance"], torch.tensor(1.0))  # perfect critic
    # V = mean(R): residual var = Var[R] -> 1 - 1 = 0
    _, stats = value_loss(torch.full((1, 4), 2.5), ret, ret, mask, None)
    assert_close(stats["explained_variance"], torch.tensor(0.0))


# ---------------------------------------------------------------- logits helpers
def test_entropy_uniform_and_degenerate():
    assert_close(entropy_from_logits(torch.zeros(2, 3, 7)), torch.full((2, 3), math.log(7)))
    # two equal finite logits, rest -inf: entropy ln 2, no NaN in value or grad
    logits = torch.tensor([[[0.0, 0.0, -math.inf, -math.inf]]], requires_grad=True)
    ent = entropy_from_logits(logits)
    assert_close(ent, torch.tensor([[LN2]]))
    ent.sum().backward()
    assert not torch.isnan(logits.grad).any()
    # a near-deterministic distribution has ~0 entropy
    assert entropy_from_logits(torch.tensor([[[100.0, 0.0, 0.0]]])).item() < 1e-6


def test_entropy_bf16_is_computed_in_float32():
    ent = entropy_from_logits(torch.zeros(1, 1, 5, dtype=torch.bfloat16))
    assert ent.dtype == torch.float32
    assert_close(ent, torch.tensor([[math.log(5)]]))


def test_logprobs_from_logits_matches_manual():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g) * 3
    labels = torch.randint(0, 11, (2, 3), generator=g)
    expected = torch.empty(2, 3)
    for b in range(2):
        for t in range(3):
            z = logits[b, t]
            expected[b, t] = z[labels[b, t]] - z.exp().sum().log()
    assert_close(logprobs_from_logits(logits, labels), expected)
    half = logprobs_from_logits(logits.bfloat16(), labels)
    assert half.dtype == torch.float32
    assert_close(half, expected, atol=0.1, rtol=0)  # bf16 inputs lose ~3 digits


def test_logprobs_from_logits_gradient():
    logits = torch.zeros(1, 1, 4, requires_grad=True)
    lp = logprobs_from_logits(logits, torch.tensor([[2]]))
    assert_close(lp, torch.tensor([[-math.log(4)]]))
    lp.sum().backward()
    # d log softmax_y / dz = onehot(y) - softmax = [-.25, -.25, .75, -.25]
    assert_close(logits.grad, torch.tensor([[[-0.25, -0.25, 0.75, -0.25]]]))
