"""The three pieces of the published PPO-family recipes: asymmetric clipping (DAPO's clip-higher, GSPO's range),
sequence-level truncated importance weights, and DAPO's overlong reward shaping. Each by hand, and against
veRL's formula written out here (verl/trainer/ppo/core_algos.py compute_policy_loss_vanilla,
verl/trainer/ppo/mismatch_helper.py compute_rollout_importance_weights, DAPORewardManager's overlong buffer)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import overlong_penalty, ppo_policy_loss, truncated_is_weights
from rlhf_dist.config import ConfigError, RewardSource, load_config
from rlhf_dist.driver.rewards import RewardError, combine_rewards


def one_token(ratio: float, adv: float, low: float = 0.2, high: float | None = 0.28, dual_clip=None):
    lp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, stats = ppo_policy_loss(lp, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), low, dual_clip,
                                  clip_eps_high=high)
    loss.backward()
    return loss.item(), lp.grad.item(), stats["clipfrac"].item()


# ---------------------------------------------------------------- asymmetric clip
def test_clip_higher_by_hand():
    # r = 1.25, A = 1: inside [0.8, 1.28], so it still learns (objective r, d obj / d logp = r); the symmetric
    # clip at 1.2 would have cut it
    assert one_token(1.25, 1.0) == pytest.approx((-1.25, -1.25, 0.0))
    assert one_token(1.25, 1.0, high=None) == pytest.approx((-1.2, 0.0, 1.0))
    # r = 1.5, A = 1: clipped at 1 + eps_high = 1.28, no gradient
    assert one_token(1.5, 1.0) == pytest.approx((-1.28, 0.0, 1.0))
    # the low bound is eps_low's: r = 0.75, A = -1 -> min(-0.75, -0.8) = -0.8, clipped
    assert one_token(0.75, -1.0) == pytest.approx((0.8, 0.0, 1.0))
    # r = 0.9, A = -1: inside, loss -(r * A) = r = 0.9, d loss / d logp = r
    assert one_token(0.9, -1.0) == pytest.approx((0.9, 0.9, 0.0))
    # the dual clip keeps its floor c * A: r = 5, A = -1, c = 3 -> max(min(-5, -1.28), -3) = -3, loss 3
    assert one_token(5.0, -1.0, dual_clip=3.0)[:2] == pytest.approx((3.0, 0.0))
    with pytest.raises(ValueError, match="clip_eps_high must be >= clip_eps"):
        one_token(1.0, 1.0, low=0.2, high=0.1)


def test_gspo_paper_range_by_hand():
    # log ratios [0, 7e-4] -> s = exp(3.5e-4) = 1.000350061; A = 1 on both tokens, seq_mean_token_mean
    def run(low, high):
        lp = torch.tensor([[0.0, 7e-4]], requires_grad=True)
        loss, stats = ppo_policy_loss(lp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), low,
                                      variant="gspo", aggregation="seq_mean_token_mean", clip_eps_high=high)
        loss.backward()
        return loss.item(), lp.grad, stats["clipfrac"].item()

    s = math.exp(3.5e-4)
    loss, grad, frac = run(3e-4, 4e-4)  # the paper's range: s <= 1 + 4e-4, not clipped
    assert loss == pytest.approx(-s, abs=1e-7) and frac == 0.0
    assert_close(grad, torch.full((1, 2), -s / 2))  # each token: s * grad logp_t / 2 tokens
    loss, grad, frac = run(3e-4, None)  # symmetric 3e-4: clipped at 1.0003, no gradient
    assert loss == pytest.approx(-1.0003, abs=1e-7) and frac == 1.0 and torch.all(grad == 0)


def verl_vanilla_loss(log_prob, old_log_prob, adv, mask, low, high, c):
    """veRL compute_policy_loss_vanilla (token-mean aggregation), written out."""
    ratio = torch.exp(torch.clamp(log_prob - old_log_prob, -20.0, 20.0))
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - low, 1 + high)
    clip1 = torch.maximum(pg1, pg2)
    clip2 = torch.min(-adv * c, clip1)
    pg = torch.where(adv < 0, clip2, clip1)
    return (pg * mask).sum() / mask.sum()


@pytest.mark.parametrize("variant_high, c", [(0.28, 3.0), (0.2, 10.0), (0.5, 1.5)])
def test_asymmetric_clip_matches_verl_formula(variant_high, c):
    g = torch.Generator().manual_seed(7)
    old = torch.randn(6, 9, generator=g) - 2
    new = old + 0.4 * torch.randn(6, 9, generator=g)
    adv = torch.randn(6, 9, generator=g)
    mask = (torch.rand(6, 9, generator=g) > 0.2).float()
    ours_lp, theirs_lp = new.clone().requires_grad_(True), new.clone().requires_grad_(True)
    ours, _ = ppo_policy_loss(ours_lp, old, adv, mask, 0.2, c, clip_eps_high=variant_high)
    theirs = verl_vanilla_loss(theirs_lp, old, adv, mask, 0.2, variant_high, c)
    ours.backward()
    theirs.backward()
    assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert_close(ours_lp.grad, theirs_lp.grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- sequence-level importance weights
def _two_rows():
    # row 0: pi_old / mu = 0.6/0.2, 0.5/0.5, 0.2/0.4 = 3, 1, 0.5 (product 1.5); the last column is padding
    # row 1: 0.5/0.25, 0.5/0.125 = 2, 4 (product 8), then padding (e^100 if read)
    old = torch.log(torch.tensor([[0.6, 0.5, 0.2, 1.0], [0.5, 0.5, 1.0, 1.0]]))
    behaviour = torch.tensor([[math.log(0.2), math.log(0.5), math.log(0.4), -100.0],
                              [math.log(0.25), math.log(0.125), -100.0, -100.0]])
    return old, behaviour, torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def test_sequence_is_weights_by_hand():
    old, behaviour, mask = _two_rows()
    w, stats = truncated_is_weights(old, behaviour, mask, cap=2.0, level="sequence")
    # each row's product on each of its tokens: 1.5, and 8 truncated to 2
    assert_close(w, torch.tensor([[1.5, 1.5, 1.5, 0.0], [2.0, 2.0, 0.0, 0.0]]))
    # raw, over the 5 valid tokens: mean (3 * 1.5 + 2 * 8) / 5 = 4.1, max 8, 2 of 5 tokens over the cap
    assert_close(stats["is_weight_mean"], torch.tensor(4.1))
    assert_close(stats["is_weight_max"], torch.tensor(8.0))
    assert_close(stats["is_clipped_frac"], torch.tensor(0.4))


def test_geometric_is_weights_by_hand():
    old, behaviour, mask = _two_rows()
    w, stats = truncated_is_weights(old, behaviour, mask, cap=2.0, level="geometric")
    g0, g1 = 1.5 ** (1 / 3), math.sqrt(8)  # 1.1447, 2.8284 -> truncated to 2
    assert_close(w, torch.tensor([[g0, g0, g0, 0.0], [2.0, 2.0, 0.0, 0.0]]))
    assert_close(stats["is_weight_mean"], torch.tensor((3 * g0 + 2 * g1) / 5))
    assert_close(stats["is_clipped_frac"], torch.tensor(0.4))
    with pytest.raises(ValueError, match="'token', 'sequence' or 'geometric'"):
        truncated_is_weights(old, behaviour, mask, cap=2.0, level="seq")


def test_sequence_weight_survives_a_long_sequence_and_gives_no_gradient():
    # 400 tokens each 0.1 nats apart: sum 40, clamped to 20 before exp (finite), then truncated to the cap
    old = torch.zeros(1, 400, requires_grad=True)
    w, stats = truncated_is_weights(old, torch.full((1, 400), -0.1), torch.ones(1, 400), 2.0, "sequence")
    assert torch.all(w == 2.0) and not w.requires_grad
    assert_close(stats["is_weight_max"], torch.tensor(math.exp(20.0)))


@pytest.mark.parametrize("level", ["sequence", "geometric"])
def test_sequence_levels_match_verl_formula(level):
    g = torch.Generator().manual_seed(3)
    old = torch.randn(5, 7, generator=g) - 1
    behaviour = old + 0.3 * torch.randn(5, 7, generator=g)
    mask = (torch.rand(5, 7, generator=g) > 0.3).float()
    mask[:, 0] = 1
    log_ratio = old - behaviour
    if level == "sequence":  # veRL: masked_sum, clamp +-20, exp, expand; truncate at the threshold; * mask
        per_row = (log_ratio * mask).sum(-1, keepdim=True)
    else:  # geometric: masked_mean
        per_row = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
    theirs = torch.exp(per_row.clamp(-20, 20)).expand_as(old).clamp(max=2.0) * mask
    ours, _ = truncated_is_weights(old, behaviour, mask, 2.0, level)
    assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- overlong reward shaping
def test_overlong_penalty_by_hand():
    # L_max 8, L_cache 4: 0 up to 4 tokens, then -1/4 per token, -1 at the cap (and beyond)
    lengths = torch.tensor([0, 2, 4, 5, 6, 7, 8, 9])
    assert overlong_penalty(lengths, 8, 4).tolist() == [0.0, 0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0]
    # the buffer may be the whole range: L_cache = L_max = 3 -> (0 - n) / 3
    assert_close(overlong_penalty(torch.tensor([0, 1, 3]), 3, 3), torch.tensor([0.0, -1 / 3, -1.0]))
    with pytest.raises(ValueError, match="buffer_tokens must be in"):
        overlong_penalty(lengths, 8, 9)


def test_overlong_penalty_matches_verl_dapo_reward_manager():
    max_resp_len, buffer_len, factor = 20, 6, 0.7
    for n in range(max_resp_len + 1):  # veRL generates at most max_resp_len tokens
        exceed = n - (max_resp_len - buffer_len)
        theirs = min(-exceed / buffer_len * factor, 0)
        ours = factor * overlong_penalty(torch.tensor([n]), max_resp_len, buffer_len).item()
        assert ours == pytest.approx(theirs, abs=1e-7)


def test_overlong_source_is_summed_by_weight_and_logged():
    sources = [RewardSource(kind="function", function="rlhf_dist.eval.rules:length_reward"),
               RewardSource(kind="overlong", buffer_tokens=4, weight=0.5)]
    total, parts = combine_rewards(sources, ["p", "q", "r"], ["ab", "abcd", "a"], None, [3, 6, 8], 8)
    # len/100 + 0.5 * [0, -0.5, -1]
    assert_close(total, torch.tensor([0.02, 0.04 - 0.25, 0.01 - 0.5]))
    assert parts["reward/overlong1"] == pytest.approx(-0.5)  # the mean penalty before the weight
    with pytest.raises(RewardError, match="'overlong' reward source needs the responses' token lengths"):
        combine_rewards(sources[1:], ["p"], ["a"], None)


# ---------------------------------------------------------------- options
def test_recipe_options_resolve_and_validate():
    cfg = load_config("configs/tiny.yaml", [
        "ppo.clip_eps_high=0.28", "ppo.tis_level=sequence",
        "ppo.rewards=[{kind: model}, {kind: overlong, buffer_tokens: 4}]"])
    assert cfg.ppo.clip_bounds() == (0.2, 0.28) and cfg.ppo.tis_level == "sequence"
    assert load_config(None, ["ppo.clip_eps=0.1"]).ppo.clip_bounds() == (0.1, 0.1)
    assert load_config(None, ["ppo.clip_eps_low=3e-4", "ppo.clip_eps_high=4e-4"]).ppo.clip_bounds() == (3e-4, 4e-4)


@pytest.mark.parametrize("overrides, message", [
    (["ppo.clip_eps_high=0.1"], "ppo.clip_eps_high (0.1) must be >= the low bound ppo.clip_eps_low (0.2"),
    (["ppo.clip_eps_low=0.3"], "ppo.clip_eps_high (0.2) must be >= the low bound ppo.clip_eps_low (0.3"),
    (["ppo.clip_eps_low=0"], "ppo.clip_eps_low: Input should be greater than 0"),
    (["ppo.tis_level=sequence", "ppo.tis_cap=null"], "ppo.tis_level 'sequence' weights the loss by truncated "
                                                     "importance sampling, which is off here (ppo.tis_cap null"),
    (["ppo.tis_level=geometric", "ppo.old_logprobs=rollout"], "ppo.old_logprobs 'rollout'): set ppo.tis_cap"),
    (["ppo.tis_level=seq"], "ppo.tis_level: Input should be 'token', 'sequence' or 'geometric'"),
    (["ppo.rewards=[{kind: overlong}]"], "ppo.rewards[0].buffer_tokens is required for kind 'overlong'"),
    (["ppo.rewards=[{kind: overlong, buffer_tokens: 33}]"],
     "ppo.rewards[0].buffer_tokens (33) must be <= the response cap rollout.sampling.max_new_tokens (32)"),
])
def test_bad_recipe_options_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
