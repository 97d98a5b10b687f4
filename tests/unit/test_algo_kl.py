"""Checks for KL estimators, KL-penalised rewards and KL controllers."""

import json
import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import (
    AdaptiveKLController,
    FixedKLController,
    build_kl_controller,
    kl_estimate,
    kl_penalized_rewards,
)


def test_estimators_by_hand():
    lp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    d = math.log(2.0)  # log(0.5 / 0.25)
    assert_close(kl_estimate(lp, ref, "k1"), torch.tensor([[d]]))
    # k2 = 0.5 * ln(2)^2 = 0.240227
    assert_close(kl_estimate(lp, ref, "k2"), torch.tensor([[0.5 * d * d]]))
    # k3 = exp(-ln 2) - 1 + ln 2 = 0.5 - 1 + 0.693147 = 0.193147
    assert_close(kl_estimate(lp, ref, "k3"), torch.tensor([[0.193147]]), atol=1e-6, rtol=0)


def test_k2_is_half_squared_log_ratio_and_k3_nonnegative():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(64, 32, generator=g) * 5
    ref = torch.randn(64, 32, generator=g) * 5
    assert_close(kl_estimate(lp, ref, "k2"), 0.5 * (lp - ref) ** 2)
    assert (kl_estimate(lp, ref, "k3") >= 0).all()
    # k1 can be negative, which is why k3 exists
    assert (kl_estimate(lp, ref, "k1") < 0).any()


def test_unknown_estimator_raises():
    with pytest.raises(ValueError):
        kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_k1_and_k3_match_exact_kl_by_sampling():
    pi = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    ref = torch.full((4,), 0.25, dtype=torch.float64)
    # exact KL(pi || ref) = 0.5 ln2 + 2 * 0.2 ln0.8 + 0.1 ln0.4 = 0.165688
    exact = (pi * (pi / ref).log()).sum().item()
    assert abs(exact - 0.165688) < 1e-5
    n = 200_000
    g = torch.Generator().manual_seed(1)
    tokens = torch.multinomial(pi, n, replacement=True, generator=g)
    lp, lref = pi.log()[tokens].unsqueeze(0), ref.log()[tokens].unsqueeze(0)
    for kind in ("k1", "k3"):
        est = kl_estimate(lp, lref, kind)
        # 5 standard errors of the sample mean: fails ~never by chance
        tol = 5 * est.std().item() / math.sqrt(n)
        assert abs(est.mean().item() - exact) < tol, kind


def test_penalized_rewards_right_padding():
    scores = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    lp = torch.full((2, 3), 0.1)
    ref = torch.zeros(2, 3)
    rewards, kl = kl_penalized_rewards(scores, lp, ref, mask, kl_coef=0.5)
    # per-token penalty -0.5 * 0.1 = -0.05; score on the last valid token
    expected = torch.tensor([[-0.05, -0.05 + 2.0, 0.0], [-0.05 - 1.0, 0.0, 0.0]])
    assert_close(rewards, expected)
    assert_close(kl, torch.tensor([[0.1, 0.1, 0.0], [0.1, 0.0, 0.0]]))


def test_penalized_rewards_left_padding_and_empty_row():
    scores = torch.tensor([2.0, -1.0, 3.0])
    mask = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    lp = torch.full((3, 3), 0.1)
    lp[:, 0] = float("nan")  # garbage in padding must not leak
    lp[2] = float("nan")
    ref = torch.zeros(3, 3)
    rewards, kl = kl_penalized_rewards(scores, lp, ref, mask, kl_coef=0.5)
    expected = torch.tensor(
        [[0.0, -0.05, -0.05 + 2.0], [0.0, 0.0, -0.05 - 1.0], [0.0, 0.0, 0.0]]
    )
    assert_close(rewards, expected)
    assert not torch.isnan(kl).any()
    assert torch.equal(rewards[2], torch.zeros(3))  # empty row gets no score


def test_penalized_rewards_k3_kind():
    # d = ln 2 everywhere -> k3 = 0.193147, coef 1 -> reward -0.193147 + score
    lp = torch.full((1, 2), math.log(2.0))
    rewards, _ = kl_penalized_rewards(
        torch.tensor([1.0]), lp, torch.zeros(1, 2), torch.ones(1, 2), 1.0, "k3"
    )
    assert_close(rewards, torch.tensor([[-0.193147, 1 - 0.193147]]), atol=1e-6, rtol=0)


def test_adaptive_controller_one_step_by_hand():
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=9.0, n_steps=256)
    # error = clip(9/6 - 1 = 0.5, -0.2, 0.2) = 0.2 -> 0.1 * (1 + 0.2 * 256 / 1e4) = 0.100512
    assert ctl.coef == pytest.approx(0.100512)
    ctl.update(current_kl=5.4, n_steps=256)
    # error = 5.4/6 - 1 = -0.1 (inside the clip) -> * (1 - 0.1 * 0.0256) = * 0.99744
    assert ctl.coef == pytest.approx(0.100512 * 0.99744)


def test_adaptive_controller_state_round_trip_via_json():
    ctl = AdaptiveKLController(0.2, 3.0, 100)
    ctl.update(10.0, 50)  # error 0.2 -> 0.2 * 1.1 = 0.22
    assert ctl.coef == pytest.approx(0.22)
    restored = AdaptiveKLController(1.0, 1.0, 1)
    restored.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
    assert (restored.coef, restored.target, restored.horizon) == (ctl.coef, 3.0, 100)
    restored.update(0.0, 50)  # error clipped to -0.2 -> * 0.9
    assert restored.coef == pytest.approx(0.22 * 0.9)


def test_fixed_controller_and_builder():
    ctl = build_kl_controller("fixed", 0.05)
    assert isinstance(ctl, FixedKLController)
    ctl.update(100.0, 1000)
    assert ctl.coef == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.coef == 0.05
    adaptive = build_kl_controller("adaptive", 0.1, target=6.0, horizon=10)
    assert isinstance(adaptive, AdaptiveKLController)
    with pytest.raises(ValueError):
        build_kl_controller("adaptive", 0.1)
    with pytest.raises(ValueError):
        build_kl_controller("pid", 0.1)


def test_k3_is_clamped_to_a_documented_log_ratio_range():
    from rlhf_dist.algo.kl import K3_LOG_RATIO_CLAMP

    assert K3_LOG_RATIO_CLAMP == 10.0
    lp, ref = torch.tensor([[-15.0, 15.0, -3.0]]), torch.zeros(1, 3)
    k3 = kl_estimate(lp, ref, "k3")
    assert torch.isfinite(k3).all()
    # log-ratio -15 -> clamped to -10: exp(10) - 1 - 10 = 22015.4658 (unclamped it would be 3.27e6)
    assert k3[0, 0].item() == pytest.approx(math.exp(10) - 11, rel=1e-6)
    # +15 -> +10: exp(-10) - 1 + 10 = 9.0000454
    assert k3[0, 1].item() == pytest.approx(math.exp(-10) + 9, rel=1e-6)
    # inside the range nothing changes: exp(3) - 1 - 3 = 16.0855369
    assert k3[0, 2].item() == pytest.approx(math.exp(3) - 4, rel=1e-6)
    # k1 and k2 are not clamped
    assert kl_estimate(lp, ref, "k1")[0, 0].item() == -15.0
    assert kl_estimate(lp, ref, "k2")[0, 0].item() == pytest.approx(112.5)
