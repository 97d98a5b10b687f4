"""KL estimators, KL-penalised token rewards and KL-coefficient controllers.

The estimators (algo/kl_estimators/, one per module, registered in KL_ESTIMATORS) follow
J. Schulman, "Approximating KL Divergence" (2020): with tokens sampled from the policy pi and
``log_ratio = log pi - log pi_ref``,

* k1 = log_ratio                          (unbiased, high variance, can be < 0)
* k2 = 0.5 * log_ratio**2                 (biased, low variance, >= 0)
* k3 = exp(-log_ratio) - 1 + log_ratio    (unbiased, low variance, >= 0; log_ratio clamped to +-10,
                                           see algo/kl_estimators/k3.py)

all estimate KL(pi || pi_ref) in expectation over samples from pi.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from rlhf_dist.algo.kl_estimators.k3 import K3_LOG_RATIO_CLAMP  # noqa: F401  (its former home, still imported)
from rlhf_dist.algo.registry import KL_ESTIMATORS


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref).

    Args:
        logprobs: ``[B, T]`` log pi of the sampled tokens.
        ref_logprobs: ``[B, T]`` log pi_ref of the same tokens.
        kind: a registered KL estimator, e.g. ``"k1"``, ``"k2"`` or ``"k3"``
            (see module docstring); ValueError names the known ones.

    Returns:
        ``[B, T]`` estimate (padding positions are not masked here).
    """
    return KL_ESTIMATORS.get(kind).fn(logprobs - ref_logprobs)


def last_valid_index(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the last valid token of every row.

    Args:
        mask: ``[B, T]`` bool or 0/1.

    Returns:
        ``(index [B] long, has_valid [B] bool)``; index is -1 for empty rows.
    """
    valid = mask.bool()
    positions = torch.arange(valid.shape[-1], device=valid.device)
    # Max over positions of valid tokens works for left padding, right padding
    # and holes alike; empty rows fall back to the -1 sentinel.
    idx = torch.where(valid, positions, torch.full_like(positions, -1)).amax(-1)
    return idx, idx >= 0


def kl_penalized_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    kind: str = "k1",
) -> tuple[Tensor, Tensor]:
    """Dense per-token rewards: ``-kl_coef * kl`` plus the score at the end.

    Args:
        scores: ``[B]`` sequence-level reward-model scores.
        logprobs: ``[B, T]`` policy log-probs of the response tokens.
        ref_logprobs: ``[B, T]`` reference-model log-probs.
        mask: ``[B, T]`` valid response tokens (left or right padded).
        kl_coef: penalty coefficient beta.
        kind: KL estimator, see :func:`kl_estimate`.

    Returns:
        ``(rewards [B, T], kl [B, T])``, both 0 on masked positions. A row with
        no valid token receives neither penalty nor score.
    """
    valid = mask.bool()
    kl = kl_estimate(logprobs, ref_logprobs, kind)
    kl = torch.where(valid, kl, torch.zeros_like(kl))
    last, has_valid = last_valid_index(valid)
    positions = torch.arange(valid.shape[-1], device=valid.device)
    at_last = (positions.unsqueeze(0) == last.unsqueeze(-1)) & has_valid.unsqueeze(-1)
    score_bonus = torch.where(
        at_last, scores.unsqueeze(-1).to(kl.dtype), torch.zeros_like(kl)
    )
    return -kl_coef * kl + score_bonus, kl


class FixedKLController:
    """A KL coefficient that never changes."""

    def __init__(self, coef: float) -> None:
        self.coef = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op; present so both controllers share one interface."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {"coef": self.coef}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output."""
        self.coef = float(d["coef"])


class AdaptiveKLController:
    """Proportional controller steering the observed KL toward a target.

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences":
    ``e = clip(current_kl / target - 1, -0.2, 0.2)`` and
    ``coef <- coef * (1 + e * n_steps / horizon)``.
    """

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive")
        self.coef = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move ``coef`` after observing ``current_kl`` over ``n_steps`` samples."""
        # Clipping bounds the per-update change so one noisy batch cannot
        # blow up or zero the coefficient.
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (coef plus the settings it was built with)."""
        return {"coef": self.coef, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; missing target/horizon keep their values."""
        self.coef = float(d["coef"])
        self.target = float(d.get("target", self.target))
        self.horizon = int(d.get("horizon", self.horizon))


KLController = FixedKLController | AdaptiveKLController


def build_kl_controller(
    kind: Literal["fixed", "adaptive"],
    coef: float,
    target: float | None = None,
    horizon: int | None = None,
) -> KLController:
    """Create a KL controller; ``target`` and ``horizon`` are needed for adaptive."""
    if kind == "fixed":
        return FixedKLController(coef)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError("adaptive KL controller needs target and horizon")
        return AdaptiveKLController(coef, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}; expected fixed or adaptive")
