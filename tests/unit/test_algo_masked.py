"""Hand-computed checks for rlhf_dist.algo.masked."""

import torch
from torch.testing import assert_close

from rlhf_dist.algo import masked_mean, masked_sum, masked_var, masked_whiten

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [0, 0, 0]])


def test_sum_and_mean_all_dims():
    # valid entries 1, 2 -> sum 3, mean 1.5
    assert masked_sum(X, M).item() == 3.0
    assert masked_mean(X, M).item() == 1.5


def test_sum_and_mean_per_row_all_masked_row_is_zero():
    # row 0: 1+2 = 3, mean 1.5; row 1 has no valid entry -> 0, not NaN
    assert_close(masked_sum(X, M, dim=1), torch.tensor([3.0, 0.0]))
    assert_close(masked_mean(X, M, dim=1), torch.tensor([1.5, 0.0]))
    # per column: col0 -> 1, col1 -> 2, col2 -> none -> 0
    assert_close(masked_mean(X, M, dim=0), torch.tensor([1.0, 2.0, 0.0]))


def test_bool_and_float_masks_agree():
    assert_close(masked_mean(X, M.bool(), dim=1), masked_mean(X, M.float(), dim=1))


def test_nonfinite_padding_does_not_leak_into_value_or_grad():
    x = torch.tensor([[1.0, float("inf")], [float("nan"), 3.0]], requires_grad=True)
    m = torch.tensor([[True, False], [False, True]])
    out = masked_mean(x, m)
    assert out.item() == 2.0  # (1 + 3) / 2
    out.backward()
    # d mean / d x = 1/2 on valid entries, 0 on padding
    assert_close(x.grad, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))


def test_masked_var_by_hand():
    x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, -7.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # valid 1,2,3,4: mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5
    assert_close(masked_var(x, m), torch.tensor(5.0 / 3.0))  # unbiased: 5/3
    assert_close(masked_var(x, m, unbiased=False), torch.tensor(1.25))  # 5/4


def test_masked_var_degenerate_counts_are_zero():
    x = torch.tensor([[5.0, 1.0]])
    assert masked_var(x, torch.tensor([[1, 0]])).item() == 0.0  # n = 1, unbiased
    assert masked_var(x, torch.zeros(1, 2)).item() == 0.0  # n = 0
    assert masked_var(x, torch.zeros(1, 2), unbiased=False).item() == 0.0


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 50.0], [3.0, 4.0, 60.0]])
    m = torch.tensor([[1, 1, 0], [1, 1, 0]])
    out = masked_whiten(x, m)
    # mean 2.5, unbiased var 5/3 -> (x - 2.5) / sqrt(5/3); padding -> 0
    s = (5.0 / 3.0) ** 0.5
    expected = torch.tensor([[-1.5 / s, -0.5 / s, 0.0], [0.5 / s, 1.5 / s, 0.0]])
    assert_close(out, expected)
    assert abs(masked_mean(out, m).item()) < 1e-6
    assert_close(masked_var(out, m), torch.tensor(1.0))


def test_whiten_without_shift_keeps_mean():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    m = torch.ones(1, 4)
    out = masked_whiten(x, m, shift_mean=False)
    # (x - 2.5) / sqrt(5/3) + 2.5: mean stays 2.5, variance becomes 1
    assert_close(masked_mean(out, m), torch.tensor(2.5))
    assert_close(masked_var(out, m), torch.tensor(1.0))


def test_whiten_all_masked_is_zero_not_nan():
    x = torch.tensor([[float("nan"), 2.0]])
    out = masked_whiten(x, torch.zeros(1, 2))
    assert torch.equal(out, torch.zeros(1, 2))
