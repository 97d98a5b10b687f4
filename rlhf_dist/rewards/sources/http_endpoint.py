"""An HTTP endpoint: POST {prompts, responses} -> {"rewards": [...]}. Transient failures (timeouts, connection
errors, 429, 5xx) get bounded retries with backoff, then the step fails with the URL; other 4xx fail at once."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from rlhf_dist.rewards.registry import REWARD_SOURCES, RewardCall, RewardError, checked_rewards

if TYPE_CHECKING:
    from rlhf_dist.config.schema import RewardSource


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
            return checked_rewards(_rewards_of(raw, src.url), len(prompts), f"reward endpoint {src.url}", prompts)
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


@REWARD_SOURCES.register("http", requires=("url",))
def http_endpoint(src: RewardSource, call: RewardCall) -> list[float]:
    """An HTTP endpoint receiving {prompts, responses}, returning {rewards} (url, timeout_s, max_retries)."""
    return call_http(src, call.prompts, call.responses)
