"""Reward sources: the reward-model actors, a Python function, or an HTTP endpoint; summed by weight.

Failures are loud: a function that raises is re-run sample by sample to name the one that
fails; an HTTP endpoint gets bounded retries with timeouts, then the step fails with the URL.
"""

from __future__ import annotations

import importlib
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import torch

from rlhf_dist.config import RewardSource


class RewardError(RuntimeError):
    """A reward source failed; the message names the source and the sample."""


def load_function(spec: str) -> Callable[[list[str], list[str]], list[float]]:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise RewardError(f"reward function '{spec}' cannot be loaded: {err}") from None


def _check(values, n: int, source: str, prompts: list[str]) -> list[float]:
    values = list(values)
    if len(values) != n:
        raise RewardError(f"{source} returned {len(values)} rewards for {n} samples")
    for i, v in enumerate(values):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RewardError(f"{source} returned {v!r} for sample {i} (prompt {prompts[i][:60]!r})")
    return [float(v) for v in values]


def call_function(spec: str, prompts: list[str], responses: list[str]) -> list[float]:
    fn = load_function(spec)
    try:
        return _check(fn(prompts, responses), len(prompts), f"reward function '{spec}'", prompts)
    except RewardError:
        raise
    except Exception as batch_err:  # find the sample that breaks it, so the user can reproduce
        for i, (p, r) in enumerate(zip(prompts, responses)):
            try:
                fn([p], [r])
            except Exception as err:
                raise RewardError(
                    f"reward function '{spec}' raised on sample {i} (prompt {p[:60]!r}, response {r[:60]!r}): {err!r}"
                ) from err
        raise RewardError(f"reward function '{spec}' raised on the batch: {batch_err!r}") from batch_err


def call_http(src: RewardSource, prompts: list[str], responses: list[str]) -> list[float]:
    body = json.dumps({"prompts": prompts, "responses": responses}).encode()
    last_error: Exception | None = None
    for attempt in range(src.max_retries + 1):
        request = urllib.request.Request(src.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=src.timeout_s) as reply:
                payload = json.loads(reply.read())
            return _check(payload["rewards"], len(prompts), f"reward endpoint {src.url}", prompts)
        except RewardError:
            raise
        except (urllib.error.URLError, TimeoutError, OSError, KeyError, ValueError) as err:
            last_error = err
            time.sleep(min(0.5 * 2**attempt, 5.0))
    raise RewardError(f"reward endpoint {src.url} failed after {src.max_retries + 1} attempts: {last_error!r}")


def combine_rewards(
    sources: list[RewardSource], prompts: list[str], responses: list[str], model_scores: Callable[[], list[float]] | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over sources -> scores [B], plus the mean of each source for logging."""
    total = torch.zeros(len(prompts))
    means: dict[str, float] = {}
    for i, src in enumerate(sources):
        if src.kind == "model":
            if model_scores is None:
                raise RewardError("a 'model' reward source needs a reward model")
            values = _check(model_scores(), len(prompts), "reward model", prompts)
        elif src.kind == "function":
            values = call_function(src.function, prompts, responses)
        else:
            values = call_http(src, prompts, responses)
        part = torch.tensor(values, dtype=torch.float32)
        means[f"reward/{src.kind}{i}"] = float(part.mean())
        total += src.weight * part
    return total, means
