"""The HTTP reward source against a real local server: what is retried, how often, and how long it waits."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlhf_dist.config import RewardSource
from rlhf_dist.rewards import RewardError
from rlhf_dist.rewards.sources.http_endpoint import backoff_s, call_http


class _Scripted(BaseHTTPRequestHandler):
    """Answers the n-th request with script[n]: an HTTP status, 'slow' (sleeps past the client's
    timeout, then answers 200) or 'garbage' (200 with a non-JSON body); past the script: 200."""

    script: list = []
    hits: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        step = self.script[len(self.hits)] if len(self.hits) < len(self.script) else 200
        self.hits.append(step)
        if step == "slow":
            time.sleep(0.6)
            step = 200
        if step == "garbage":
            reply, step = b"<html>oops</html>", 200
        else:
            reply = json.dumps({"rewards": [float(len(r)) for r in body["responses"]]}).encode()
        self.send_response(step)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint():
    def start(script):
        handler = type("H", (_Scripted,), {"script": list(script), "hits": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/score", handler.hits

    servers: list = []
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _call(url, retries=2, timeout=0.3):
    src = RewardSource(kind="http", url=url, max_retries=retries, timeout_s=timeout)
    started = time.monotonic()
    try:
        return call_http(src, ["p", "q"], ["abc", "a"]), time.monotonic() - started
    except RewardError as err:
        return err, time.monotonic() - started


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried_with_backoff(endpoint, status):
    url, hits = endpoint([status])
    rewards, elapsed = _call(url)
    assert rewards == [3.0, 1.0] and hits == [status, 200]
    assert 0.45 <= elapsed < 1.4  # one backoff of 0.5 s


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_fail_at_once_without_waiting(endpoint, status):
    url, hits = endpoint([status] * 5)
    err, elapsed = _call(url)
    assert isinstance(err, RewardError) and f"HTTP {status}" in str(err) and "not retried" in str(err)
    assert hits == [status] and elapsed < 0.4


def test_no_sleep_after_the_last_attempt(endpoint):
    url, hits = endpoint([503] * 10)
    err, elapsed = _call(url, retries=2)
    assert isinstance(err, RewardError) and "failed after 3 attempts: HTTP 503" in str(err)
    assert hits == [503, 503, 503]
    # waits 0.5 + 1.0 between the three attempts; a wait after the last would make it 3.5 s
    assert 1.45 <= elapsed < 2.5


def test_a_timeout_is_retried(endpoint):
    url, hits = endpoint(["slow"])
    rewards, elapsed = _call(url, retries=1, timeout=0.3)
    assert rewards == [3.0, 1.0] and len(hits) == 2
    assert 0.75 <= elapsed < 2.0  # 0.3 s timeout + 0.5 s backoff + the answer


def test_a_malformed_reply_is_not_retried(endpoint):
    url, hits = endpoint(["garbage"] * 3)
    err, _ = _call(url)
    assert isinstance(err, RewardError) and "<html>oops" in str(err) and len(hits) == 1


def test_connection_refused_is_retried_then_fails():
    with socket.socket() as sock:  # bound, never listening: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        err, elapsed = _call(f"http://127.0.0.1:{sock.getsockname()[1]}/x", retries=1)
    assert isinstance(err, RewardError) and "failed after 2 attempts" in str(err) and "refused" in str(err)
    assert 0.45 <= elapsed < 1.5
