"""Active selection of pairs for people to judge: pure functions over reward scores and features.

Lower rank = shown first. Uncertainty: |P(A > B) - 0.5| under a Bradley-Terry reward model (pairs it
cannot call come first). Disagreement: the spread of P(A > B) over an ensemble of linear BT heads,
each fit on a bootstrap resample of the labelled pairs (pairs the ensemble argues about come first).
"""

from __future__ import annotations

import torch


def bt_probability(score_a: torch.Tensor, score_b: torch.Tensor) -> torch.Tensor:
    """[N], [N] -> [N] P(A preferred) = sigmoid(r_A - r_B)."""
    return torch.sigmoid(score_a - score_b)


def uncertainty_rank(p_a: torch.Tensor) -> torch.Tensor:
    """[N] -> [N] |p - 0.5|: 0 for a coin flip, 0.5 for a sure call."""
    return (p_a - 0.5).abs()


def fit_bt_heads(diff: torch.Tensor, target: torch.Tensor, n_heads: int, seed: int, l2: float = 1e-2,
                 steps: int = 200, bootstrap: bool = True) -> torch.Tensor:
    """Linear BT heads on feature differences; returns [K, H].

    diff: [N, H] features(A) - features(B) (features are standardised inside by the caller or not at all);
    target: [N] P(A preferred) in [0, 1] (0.5 for a tie). Head k minimises the BT loss on a bootstrap
    resample (all rows with bootstrap=False) plus l2 * |w|^2, by L-BFGS.
    """
    gen = torch.Generator().manual_seed(seed)
    heads = []
    for _ in range(n_heads):
        rows = torch.randint(0, diff.shape[0], (diff.shape[0],), generator=gen) if bootstrap \
            else torch.arange(diff.shape[0])
        x, y = diff[rows].double(), target[rows].double()
        w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        heads.append(w.detach().float())
    return torch.stack(heads)


def ensemble_probabilities(heads: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """[K, H], [N, H] -> [K, N] P(A preferred) under each head."""
    return torch.sigmoid(diff @ heads.T).T


def disagreement_rank(heads: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """[N] minus the std of P(A > B) over the heads: the most disputed pair gets the lowest rank."""
    return -ensemble_probabilities(heads, diff).std(dim=0, unbiased=False)
