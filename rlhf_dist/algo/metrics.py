"""Evaluation metrics for reward models (plain Python floats out).

All functions raise ``ValueError`` on empty input rather than inventing a value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def _pair_inputs(chosen: Tensor, rejected: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten to float64 ``[B]`` and check shapes agree and are non-empty."""
    c = torch.as_tensor(chosen).detach().reshape(-1).to(torch.float64).cpu()
    r = torch.as_tensor(rejected).detach().reshape(-1).to(torch.float64).cpu()
    if c.shape != r.shape:
        raise ValueError(f"shape mismatch: chosen {tuple(c.shape)} vs rejected {tuple(r.shape)}")
    if c.numel() == 0:
        raise ValueError("empty input")
    return c, r


def pairwise_accuracy(chosen: Tensor, rejected: Tensor, target: Tensor | None = None) -> float:
    """Tie-aware agreement of the scores with the labels, averaged over pairs.

    Per pair, with ``w = 1{s_c > s_r} + 0.5 * 1{s_c == s_r}`` (the model's verdict that
    ``chosen`` wins) and ``t`` = P(chosen preferred) from the label:

        agreement = 1 - |w - t|

    t = 1 (a decisive label, the default): 1 for a win, 0.5 for equal scores, 0 for a loss,
    the usual accuracy. t = 0.5 (a tie label): 0.5 whichever side scores higher (a coin's
    agreement with "no preference") and 1 only for equal scores; it never counts as if
    ``chosen`` had to win. Soft labels (t = 0.8) give t for a win and 1 - t for a loss: the
    expected agreement with an annotator who prefers ``chosen`` with probability t.

    Args:
        chosen: ``[B]`` scores of the preferred responses.
        rejected: ``[B]`` scores of the other responses.
        target: ``[B]`` P(chosen preferred) in [0, 1]; None = all 1.
    """
    c, r = _pair_inputs(chosen, rejected)
    wins = (c > r).to(torch.float64) + 0.5 * (c == r).to(torch.float64)
    if target is None:
        return wins.mean().item()
    t = torch.as_tensor(target).detach().reshape(-1).to(torch.float64).cpu()
    if t.shape != c.shape:
        raise ValueError(f"shape mismatch: target {tuple(t.shape)} vs scores {tuple(c.shape)}")
    return (1.0 - (wins - t).abs()).mean().item()


def kendall_tau(scores: Sequence[float], ranking: Sequence[int]) -> float:
    """Kendall's tau-b between model scores and a ground-truth ranking.

    Args:
        scores: ``[N]`` model scores, higher = better.
        ranking: ``[N]`` ground-truth rank of item i, 0 = best (ties allowed).

    Returns:
        ``(C - D) / sqrt((P - T_s) * (P - T_r))`` where P = N(N-1)/2 pairs,
        C/D = concordant/discordant pairs, T_s/T_r = pairs tied in scores /
        ranking. 0.0 when either side is entirely tied (tau-b undefined).
    """
    s = torch.as_tensor(list(scores), dtype=torch.float64)
    # Negate ranks so that "larger is better" on both sides.
    g = -torch.as_tensor(list(ranking), dtype=torch.float64)
    n = s.numel()
    if n != g.numel():
        raise ValueError(f"scores has {n} items but ranking has {g.numel()}")
    if n < 2:
        raise ValueError("kendall_tau needs at least 2 items")
    i, j = torch.triu_indices(n, n, offset=1)
    sign_s = torch.sign(s[i] - s[j])
    sign_g = torch.sign(g[i] - g[j])
    agreement = (sign_s * sign_g).sum().item()  # = C - D
    n_pairs = n * (n - 1) / 2
    untied_s = n_pairs - (sign_s == 0).sum().item()
    untied_g = n_pairs - (sign_g == 0).sum().item()
    if untied_s == 0 or untied_g == 0:
        return 0.0
    return agreement / math.sqrt(untied_s * untied_g)


def mean_kendall_tau(items: Sequence[tuple[Sequence[float], Sequence[int]]]) -> float:
    """Average :func:`kendall_tau` over ``(scores, ranking)`` lists (e.g. one per prompt)."""
    if len(items) == 0:
        raise ValueError("empty input")
    return sum(kendall_tau(s, r) for s, r in items) / len(items)


def reward_margin_stats(chosen: Tensor, rejected: Tensor) -> dict[str, float]:
    """Summary of the margin ``chosen - rejected``.

    Args:
        chosen: ``[B]``; rejected: ``[B]``.

    Returns:
        ``{"mean", "std", "min", "max"}``; std is unbiased (0 for B == 1).
    """
    c, r = _pair_inputs(chosen, rejected)
    margin = c - r
    std = margin.std(unbiased=True).item() if margin.numel() > 1 else 0.0
    return {
        "mean": margin.mean().item(),
        "std": std,
        "min": margin.min().item(),
        "max": margin.max().item(),
    }


def calibration(chosen: Tensor, rejected: Tensor, n_bins: int = 10) -> dict[str, Any]:
    """Expected calibration error of the Bradley-Terry preference probability.

    The model predicts ``p = sigmoid(chosen - rejected)`` that ``chosen`` wins;
    the ground truth is that it always does. The predicted winner is the side
    with ``p >= 0.5`` and the confidence is ``max(p, 1 - p)`` in ``[0.5, 1]``;
    a prediction is correct when ``p > 0.5`` (``p == 0.5`` counts 0.5, as in
    :func:`pairwise_accuracy`). Confidences go into ``n_bins`` equal-width bins
    over ``[0.5, 1]`` (1.0 falls in the last bin) and
    ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|``.

    Args:
        chosen: ``[B]``; rejected: ``[B]``; n_bins: number of bins.

    Returns:
        ``{"ece": float, "bin_confidence": [..], "bin_accuracy": [..],
        "bin_count": [..], "bin_edges": [..n_bins+1]}``; empty bins report
        confidence and accuracy 0.0 with count 0.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    c, r = _pair_inputs(chosen, rejected)
    p = torch.sigmoid(c - r)
    confidence = torch.maximum(p, 1.0 - p)
    correct = (p > 0.5).to(torch.float64) + 0.5 * (p == 0.5).to(torch.float64)
    width = 0.5 / n_bins
    bins = ((confidence - 0.5) / width).floor().long().clamp(0, n_bins - 1)

    count = torch.bincount(bins, minlength=n_bins).to(torch.float64)
    conf_sum = torch.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    denom = count.clamp_min(1.0)  # empty bins: sums are 0, so means become 0
    bin_conf, bin_acc = conf_sum / denom, acc_sum / denom
    ece = ((count / count.sum()) * (bin_acc - bin_conf).abs()).sum().item()
    return {
        "ece": ece,
        "bin_confidence": bin_conf.tolist(),
        "bin_accuracy": bin_acc.tolist(),
        "bin_count": [int(x) for x in count.tolist()],
        "bin_edges": [0.5 + k * width for k in range(n_bins + 1)],
    }


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% with z = 1.96); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
