"""Checks for Dr. GRPO advantages and the DAPO dynamic-sampling filter."""

import pytest
import torch
from torch.testing import assert_close

from rlhf_dist.algo import dr_grpo_advantages, group_sample_indices, grpo_advantages, keep_informative_groups


def test_dr_grpo_centres_without_std_by_hand():
    scores = torch.tensor([0.0, 0.0, 0.0, 4.0, 1.0, 3.0, 2.0, 2.0])  # G = 4
    # group 0: mean 1 -> [-1, -1, -1, 3]; group 1: mean 2 -> [-1, 1, 0, 0]
    assert_close(dr_grpo_advantages(scores, 4), torch.tensor([-1.0, -1, -1, 3, -1, 1, 0, 0]))
    # GRPO divides by the unbiased std: group 0 std = sqrt((1+1+1+9)/3) = 2 -> [-0.5, -0.5, -0.5, 1.5]
    assert_close(grpo_advantages(scores, 4)[:4], torch.tensor([-0.5, -0.5, -0.5, 1.5]), atol=1e-6, rtol=0)
    # an all-equal group gets exactly 0 either way
    assert dr_grpo_advantages(torch.tensor([5.0, 5.0]), 2).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="not a multiple of group_size 4"):
        dr_grpo_advantages(torch.zeros(6), 4)


def test_keep_informative_groups_by_hand():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.7])  # G = 3
    # groups 0 and 2 are all-equal (zero variance, zero advantages); 1 and 3 differ
    keep = keep_informative_groups(scores, 3)
    assert keep.tolist() == [1, 3] and keep.dtype == torch.long
    assert group_sample_indices(keep, 3).tolist() == [3, 4, 5, 9, 10, 11]
    # a spread of 0.2 counts as equal under atol 0.25
    assert keep_informative_groups(scores, 3, atol=0.25).tolist() == [1]
    nothing = keep_informative_groups(torch.full((4,), 0.1), 2)
    assert nothing.shape == (0,) and group_sample_indices(nothing, 2).shape == (0,)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        keep_informative_groups(scores, 1)


def test_kept_groups_are_exactly_those_with_nonzero_group_advantages():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 2, (50 * 4,), generator=g).float()  # pass/fail rewards, G = 4
    keep = keep_informative_groups(scores, 4)
    expected = [k for k in range(50) if len(set(scores[4 * k : 4 * k + 4].tolist())) > 1]
    assert keep.tolist() == expected and 0 < len(expected) < 50
    nonzero = dr_grpo_advantages(scores, 4).view(50, 4).abs().sum(1) > 0
    assert torch.nonzero(nonzero).flatten().tolist() == expected
    kept_scores = scores[group_sample_indices(keep, 4)].view(-1, 4)
    assert bool((kept_scores.max(1).values > kept_scores.min(1).values).all())
