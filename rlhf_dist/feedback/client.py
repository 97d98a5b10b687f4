"""An annotator as an HTTP client of the feedback API: used by simulated annotators, tests and the benchmark.

It takes the path a person's browser takes (GET tasks/next, POST votes) and retries a vote after a
dropped connection with the same request_id, so a retried vote is never counted twice.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

# (prompt, left, right) -> (choice 'left' | 'right' | 'tie', confidence)
Judge = Callable[[str, str, str], tuple[str, float]]


@dataclass
class AnnotatorRun:
    """What one client saw: acknowledged votes, HTTP statuses, and per-call latencies (s)."""

    acked_vote_ids: list[int] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    next_latency_s: list[float] = field(default_factory=list)
    vote_latency_s: list[float] = field(default_factory=list)


class HTTPAnnotator:
    def __init__(self, base_url: str, token: str, campaign: str, judge: Judge, timeout_s: float = 30.0):
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
        self.campaign, self.judge = campaign, judge
        self.run = AnnotatorRun()
        self._pending: dict | None = None  # a vote sent but not answered (connection lost)

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, latencies: list[float], **kwargs) -> httpx.Response:
        start = time.perf_counter()
        response = self.client.request(method, path, **kwargs)
        latencies.append(time.perf_counter() - start)
        self.run.statuses[response.status_code] += 1
        return response

    def vote_once(self) -> bool:
        """Lease one task and vote on it; False when nothing is left for this annotator."""
        if self._pending is None:
            r = self._call("GET", "/api/v1/tasks/next", self.run.next_latency_s, params={"campaign": self.campaign})
            if r.status_code == 204:
                return False
            r.raise_for_status()
            task = r.json()
            choice, confidence = self.judge(task["prompt"], task["left"], task["right"])
            self._pending = {"task_id": task["task_id"], "choice": choice, "confidence": confidence,
                             "request_id": uuid.uuid4().hex}
        # a TransportError here leaves the vote pending: the retry sends the same request_id
        r = self._call("POST", "/api/v1/votes", self.run.vote_latency_s, json=self._pending)
        self._pending = None
        if r.status_code in (200, 201):
            self.run.acked_vote_ids.append(r.json()["vote_id"])
        return True

    def work(self, idle_wait_s: float = 0.0, deadline_s: float = 600.0, max_votes: int | None = None,
             retry_connection_s: float = 0.0, stop: Callable[[], bool] | None = None) -> AnnotatorRun:
        """Vote until nothing is left (after waiting up to idle_wait_s for expired leases), a limit, or stop().

        With retry_connection_s, a refused or dropped connection is retried for that long (a restarting
        server); an unanswered vote is sent again with the same request_id.
        """
        end = time.monotonic() + deadline_s
        idle_since: float | None = None
        down_since: float | None = None
        while (time.monotonic() < end and (max_votes is None or len(self.run.acked_vote_ids) < max_votes)
               and not (stop and stop())):
            try:
                worked = self.vote_once()
                down_since = None
            except httpx.HTTPStatusError:  # e.g. 429 or a 5xx on tasks/next: counted in statuses; back off
                time.sleep(0.5)
                continue
            except httpx.TransportError:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > retry_connection_s:
                    break
                time.sleep(0.2)
                continue
            if worked:
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= idle_wait_s:
                break
            time.sleep(0.25)
        return self.run
