"""Checks for GAE, discounted returns, GRPO, RLOO and REINFORCE++."""

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import (
    broadcast_sequence_advantages,
    discounted_returns,
    gae,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)


def brute_force_gae(rewards, values, mask, gamma, lam):
    """Independent reference: compress each row to its valid tokens, then
    A_k = sum_l (gamma*lam)^l * delta_{k+l} with V after the last token = 0."""
    adv = torch.zeros_like(rewards, dtype=torch.float64)
    for b in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[b, t]]
        r = [float(rewards[b, t]) for t in idx]
        v = [float(values[b, t]) for t in idx] + [0.0]
        deltas = [r[k] + gamma * v[k + 1] - v[k] for k in range(len(idx))]
        for k, t in enumerate(idx):
            adv[b, t] = sum((gamma * lam) ** j * deltas[k + j] for j in range(len(idx) - k))
    return adv


def padded_mask(lengths, t, left):
    """[B, t] bool mask with lengths[b] valid tokens, packed left or right."""
    pos = torch.arange(t).unsqueeze(0)
    n = torch.tensor(lengths).unsqueeze(1)
    return pos >= t - n if left else pos < n


def test_single_terminal_token_worked_example():
    # delta = r + gamma * 0 - V = 5 - 1.5 = 3.5; return = A + V = 5
    adv, ret = gae(torch.tensor([[5.0]]), torch.tensor([[1.5]]), torch.ones(1, 1), 0.9, 1.0)
    assert_close(adv, torch.tensor([[3.5]]))
    assert_close(ret, torch.tensor([[5.0]]))


def test_two_tokens_by_hand():
    r = torch.tensor([[0.0, 1.0]])
    v = torch.tensor([[0.5, 0.4]])
    adv, ret = gae(r, v, torch.ones(1, 2), gamma=0.9, lam=0.8)
    # delta1 = 1 - 0.4 = 0.6 -> A1 = 0.6
    # delta0 = 0 + 0.9*0.4 - 0.5 = -0.14 -> A0 = -0.14 + 0.72*0.6 = 0.292
    assert_close(adv, torch.tensor([[0.292, 0.6]]))
    assert_close(ret, torch.tensor([[0.792, 1.0]]))


@pytest.mark.parametrize("left", [False, True])
def test_gae_matches_brute_force(left):
    g = torch.Generator().manual_seed(3 + left)
    lengths = [7, 4, 1, 0, 3]
    mask = padded_mask(lengths, 7, left)
    assert mask.sum(1).tolist() == lengths
    r = torch.randn(5, 7, generator=g, dtype=torch.float64)
    v = torch.randn(5, 7, generator=g, dtype=torch.float64)
    # garbage on padding must be ignored
    r = torch.where(mask, r, torch.full_like(r, 1e6))
    v = torch.where(mask, v, torch.full_like(v, -1e6))
    adv, ret = gae(r, v, mask, gamma=0.95, lam=0.9)
    assert_close(adv, brute_force_gae(r, v, mask, 0.95, 0.9))
    assert_close(ret, torch.where(mask, adv + v, torch.zeros_like(v)))
    assert torch.equal(adv[3], torch.zeros(7, dtype=torch.float64))  # all-masked row


def test_gae_skips_holes_in_mask():
    r = torch.tensor([[1.0, 100.0, 2.0]])
    v = torch.tensor([[0.5, 100.0, 0.25]])
    adv, _ = gae(r, v, torch.tensor([[1, 0, 1]]), gamma=0.9, lam=0.5)
    dense, _ = gae(r[:, [0, 2]], v[:, [0, 2]], torch.ones(1, 2), gamma=0.9, lam=0.5)
    assert_close(adv[:, [0, 2]], dense)
    assert adv[0, 1].item() == 0.0


def test_gae_lambda_one_is_return_minus_value():
    g = torch.Generator().manual_seed(5)
    mask = padded_mask([5, 2, 6], 6, left=True)
    r = torch.randn(3, 6, generator=g)
    v = torch.randn(3, 6, generator=g)
    for gamma in (1.0, 0.9):
        adv, ret = gae(r, v, mask, gamma=gamma, lam=1.0)
        # with lam = 1 the deltas telescope: A_t = G_t - V_t and returns = G_t
        g_t = discounted_returns(r, mask, gamma)
        assert_close(adv, torch.where(mask, g_t - v, torch.zeros_like(v)))
        assert_close(ret, g_t)


def test_discounted_returns_by_hand_left_padded():
    r = torch.tensor([[9.0, 1.0, 2.0, 3.0]])
    # G3 = 3; G2 = 2 + 0.5*3 = 3.5; G1 = 1 + 0.5*3.5 = 2.75; padding -> 0
    out = discounted_returns(r, torch.tensor([[0, 1, 1, 1]]), gamma=0.5)
    assert_close(out, torch.tensor([[0.0, 2.75, 3.5, 3.0]]))


def test_grpo_by_hand():
    # group [1,2,3]: mean 2, unbiased std 1 -> [-1, 0, 1] / (1 + eps)
    # group [10,10,10]: std 0 -> 0 / eps = 0
    s = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    adv = grpo_advantages(s, group_size=3, eps=1e-6)
    assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / (1 + 1e-6))
    # group [0, 4]: mean 2, unbiased std sqrt(8) -> -+2/sqrt(8) = -+0.707107
    assert_close(grpo_advantages(torch.tensor([0.0, 4.0]), 2, eps=0.0),
                 torch.tensor([-0.707107, 0.707107]))
    assert_close(grpo_advantages(s, 3, scale_by_std=False),
                 torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))


def test_rloo_by_hand():
    # [1-(2+3)/2, 2-(1+3)/2, 3-(1+2)/2] = [-1.5, 0, 1.5]
    assert_close(rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), 3),
                 torch.tensor([-1.5, 0.0, 1.5]))
    g = torch.Generator().manual_seed(0)
    s = torch.randn(12, generator=g)
    # identity: RLOO = G/(G-1) * (s - group mean)
    centred = grpo_advantages(s, 4, scale_by_std=False)
    assert_close(rloo_advantages(s, 4), centred * 4 / 3)


@pytest.mark.parametrize("fn", [grpo_advantages, rloo_advantages])
def test_bad_group_size_raises(fn):
    with pytest.raises(ValueError):
        fn(torch.zeros(5), 3)  # 5 % 3 != 0
    with pytest.raises(ValueError):
        fn(torch.zeros(4), 1)  # group of one has no baseline
    with pytest.raises(ValueError):
        fn(torch.zeros(2, 2), 2)  # must be 1-D


def test_reinforce_pp_by_hand():
    r = torch.tensor([[1.0, 2.0], [3.0, 99.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = reinforce_pp_advantages(r, mask, gamma=1.0)
    # returns: row0 [3, 2], row1 [3, -]; valid 3,2,3: mean 8/3,
    # deviations 1/3,-2/3,1/3 -> unbiased var (1+4+1)/9/2 = 1/3, std 0.57735
    s = (1 / 3) ** 0.5
    expected = torch.tensor([[(1 / 3) / s, (-2 / 3) / s], [(1 / 3) / s, 0.0]])
    assert_close(adv, expected)


def test_broadcast_sequence_advantages():
    out = broadcast_sequence_advantages(
        torch.tensor([2.0, -1.0, 5.0]), torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 0]])
    )
    assert_close(out, torch.tensor([[2.0, 2.0, 0.0], [0.0, -1.0, -1.0], [0.0, 0.0, 0.0]]))
