"""Reward sources: the reward-model actors, a Python function, or an HTTP endpoint; summed by weight.

Failures are loud: a function that raises is re-run sample by sample to name the one that
fails; an HTTP endpoint gets bounded retries of transient failures (timeouts, connection errors, 429,
5xx) with backoff, then the step fails with the URL; other 4xx fail at once.
"""

from __future__ import annotations

import http.client
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


def _transient(code: int) -> bool:
    """HTTP statuses worth another try: rate limited (429) or a server-side failure (5xx)."""
    return code == 429 or code >= 500


def backoff_s(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (0-based): 0.5, 1, 2, 4, then 5 at most."""
    return min(0.5 * 2**attempt, 5.0)


def call_http(src: RewardSource, prompts: list[str], responses: list[str]) -> list[float]:
    """POST {prompts, responses} -> {"rewards": [...]}. Timeouts, connection errors, 429 and 5xx are
    retried (src.max_retries times, exponential backoff, no wait after the last attempt); any other
    4xx or a malformed reply fails at once: asking again would get the same answer."""
    body = json.dumps({"prompts": prompts, "responses": responses}).encode()
    attempts, last = src.max_retries + 1, ""
    for attempt in range(attempts):
        request = urllib.request.Request(src.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=src.timeout_s) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as err:  # before URLError: it is one
            if not _transient(err.code):
                raise RewardError(f"reward endpoint {src.url} answered HTTP {err.code} {err.reason} "
                                  "(a client error, not retried: check the URL and what it expects)") from None
            last = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as err:
            last = repr(getattr(err, "reason", err))  # timeout, refused, reset, cut-off reply
        else:
            return _check(_rewards_of(raw, src.url), len(prompts), f"reward endpoint {src.url}", prompts)
        if attempt + 1 < attempts:
            time.sleep(backoff_s(attempt))
    raise RewardError(f"reward endpoint {src.url} failed after {attempts} attempts: {last}")


def _rewards_of(raw: bytes, url: str) -> list:
    try:
        payload = json.loads(raw)
        return list(payload["rewards"])
    except (ValueError, KeyError, TypeError) as err:
        raise RewardError(f"reward endpoint {url} replied {raw[:80]!r}: expected JSON {{\"rewards\": [...]}} "
                          f"({type(err).__name__}: {err})") from None


def combine_rewards(
    sources: list[RewardSource], prompts: list[str], responses: list[str],
    model_scores: Callable[[], list[float]] | None,
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
