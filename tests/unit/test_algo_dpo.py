"""DPO, cDPO, robust DPO, IPO and SimPO (algo/dpo.py, algo/dpo_losses/) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import preference_losses, reduce_dpo, smoothed_target
from rlhf_dist.algo.dpo_registry import DPO_LOSSES, DPOLoss, DPOLossInputs


def nls(z: float) -> float:
    """-log sigmoid(z), written out."""
    return math.log(1.0 + math.exp(-z))


def inputs(target=(1.0,), beta=0.1, eps=0.0, gamma=0.0, chosen=-10.0, rejected=-12.0, ref_chosen=-11.0,
           ref_rejected=-11.0, lengths=(4, 2), grad=False) -> DPOLossInputs:
    n = len(target)
    c = torch.full((n,), chosen, dtype=torch.float64, requires_grad=grad)
    return DPOLossInputs(
        chosen_logps=c, rejected_logps=torch.full((n,), rejected, dtype=torch.float64),
        ref_chosen_logps=torch.full((n,), ref_chosen, dtype=torch.float64),
        ref_rejected_logps=torch.full((n,), ref_rejected, dtype=torch.float64),
        chosen_lengths=torch.full((n,), lengths[0]), rejected_lengths=torch.full((n,), lengths[1]),
        target=torch.tensor(target, dtype=torch.float64), beta=beta, label_smoothing=eps, gamma=gamma)


def test_registered_losses_and_their_properties():
    assert set(DPO_LOSSES.names()) == {"sigmoid", "ipo", "robust", "simpo"}
    assert DPO_LOSSES.names(reference_free=True) == ("simpo",)
    for entry in DPO_LOSSES:
        assert isinstance(entry, DPOLoss) and len(entry.description) > 20


def test_sigmoid_dpo_hard_soft_tie_and_label_smoothing():
    # log-ratios: chosen -10 - (-11) = 1, rejected -12 - (-11) = -1; h = 0.1 * (1 - (-1)) = 0.2
    losses, rc, rr = preference_losses("sigmoid", inputs(target=(1.0, 0.5, 0.8, 0.0)))
    expected = [nls(0.2), 0.5 * (nls(0.2) + nls(-0.2)), 0.8 * nls(0.2) + 0.2 * nls(-0.2), nls(-0.2)]
    assert_close(losses, torch.tensor(expected, dtype=torch.float64))
    assert_close(rc, torch.full((4,), 0.1, dtype=torch.float64))
    assert_close(rr, torch.full((4,), -0.1, dtype=torch.float64))
    # cDPO, eps 0.1: target 1 -> 0.9, a tie stays 0.5
    losses, _, _ = preference_losses("sigmoid", inputs(target=(1.0, 0.5), eps=0.1))
    assert_close(losses, torch.tensor([0.9 * nls(0.2) + 0.1 * nls(-0.2), 0.5 * (nls(0.2) + nls(-0.2))],
                                      dtype=torch.float64))
    assert_close(smoothed_target(torch.tensor([1.0, 0.0, 0.5, 0.8]), 0.1), torch.tensor([0.9, 0.1, 0.5, 0.74]))


def test_sigmoid_gradient_is_beta_times_the_residual():
    # dL/d logp_chosen = -beta * (t' - sigmoid(h)) = -0.1 * (1 - sigmoid(0.2)) = -0.1 * sigmoid(-0.2)
    x = inputs(grad=True)
    preference_losses("sigmoid", x)[0].sum().backward()
    assert x.chosen_logps.grad.item() == pytest.approx(-0.1 / (1.0 + math.exp(0.2)), abs=1e-12)


def test_ipo_is_squared_distance_of_the_per_token_gap():
    # per-token log-ratios: chosen 1/4, rejected -1/2 -> h = 0.75; 1/(2 beta) = 5
    losses, rc, rr = preference_losses("ipo", inputs(target=(1.0, 0.5, 0.8)))
    assert_close(losses, torch.tensor([(0.75 - 5.0) ** 2, 0.75 ** 2, (0.75 - 3.0) ** 2], dtype=torch.float64))
    assert_close(rc - rr, torch.full((3,), 0.2, dtype=torch.float64))  # rewards are beta * summed log-ratios
    losses, _, _ = preference_losses("ipo", inputs(eps=0.1))  # target 0.9 -> (0.75 - 0.4 / 0.1)^2
    assert losses.item() == pytest.approx((0.75 - 4.0) ** 2)


def test_robust_dpo_debiases_flipped_labels():
    losses, _, _ = preference_losses("robust", inputs(target=(1.0, 0.5), eps=0.1))
    assert losses[0].item() == pytest.approx((0.9 * nls(0.2) - 0.1 * nls(-0.2)) / 0.8, abs=1e-12)
    assert losses[1].item() == pytest.approx(0.5 * (nls(0.2) + nls(-0.2)), abs=1e-12)  # a tie: DPO's tie loss
    plain, _, _ = preference_losses("sigmoid", inputs())
    zero_eps, _, _ = preference_losses("robust", inputs())
    assert_close(zero_eps, plain)  # eps 0: plain DPO


def test_simpo_is_reference_free_and_length_normalised():
    # beta 2, gamma 0.5: chosen -4 over 4 tokens -> reward 2 * -1 = -2; rejected -6 over 2 -> 2 * -3 = -6; z = 4
    x = inputs(target=(1.0, 0.5), beta=2.0, gamma=0.5, chosen=-4.0, rejected=-6.0, ref_chosen=123.0,
               ref_rejected=-77.0)
    losses, rc, rr = preference_losses("simpo", x)
    assert losses[0].item() == pytest.approx(nls(3.5), abs=1e-12)
    assert losses[1].item() == pytest.approx(0.5 * (nls(3.5) + nls(-4.5)), abs=1e-12)  # the margin is mirrored
    assert rc.tolist() == [-2.0, -2.0] and rr.tolist() == [-6.0, -6.0]


def test_reduce_dpo_weights_and_stats():
    losses = torch.tensor([1.0, 3.0, 5.0])
    rc, rr = torch.tensor([0.3, -0.1, 0.2]), torch.tensor([0.1, 0.2, 0.2])
    loss, stats = reduce_dpo(losses, rc, rr, torch.tensor([1.0, 1.0, 0.5]))
    assert loss.item() == pytest.approx(3.0)
    # accuracy: a win (1), a loss (0), a tie label with equal rewards (1) -> 2/3
    assert stats == pytest.approx({"loss": 3.0, "rewards/chosen": 0.4 / 3, "rewards/rejected": 0.5 / 3,
                                   "margin": -0.1 / 3, "accuracy": 2 / 3})
    loss, _ = reduce_dpo(losses, rc, rr, torch.ones(3), weight=torch.tensor([1.0, 0.0, 3.0]))
    assert loss.item() == pytest.approx((1.0 + 15.0) / 4.0)
    loss, _ = reduce_dpo(losses, rc, rr, torch.ones(3), weight=torch.zeros(3))
    assert loss.item() == 0.0
