"""Request guards of the feedback service: body size, per-token rate limit, security headers.

Pure ASGI / plain classes so they run before FastAPI parses anything.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The pages load their script and style from /static only: injected markup could not run code.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# The docs pages (Swagger UI, ReDoc: local files, see app.py) start from an inline script: their own CSP
DOCS_PATHS = ("/docs", "/redoc")
DOCS_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
     b"'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


async def _json_error(send: Send, status: int, field: str, message: str) -> None:
    body = json.dumps({"error": message, "field": field}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def _read_within(receive: Receive, limit: int) -> list[Message] | None:
    """The whole request body as its ASGI messages, or None as soon as it passes `limit` bytes."""
    messages, seen = [], 0
    while True:
        message = await receive()
        messages.append(message)
        seen += len(message.get("body", b""))
        if seen > limit:
            return None
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


class GuardMiddleware:
    """413 for bodies over the limit (declared or streamed), and security headers on every response."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_import_bytes: int):
        self.app, self.max_body, self.max_import = app, max_body_bytes, max_import_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_import if scope["path"].endswith("/import") else self.max_body
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _json_error(send, 413, "body",
                              f"request body of {int(declared)} bytes is over the {limit}-byte limit")
            return
        if declared is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # chunked: read it here, because FastAPI turns any error raised while it reads a body into a 400
            buffered = await _read_within(receive, limit)
            if buffered is None:
                await _json_error(send, 413, "body", f"request body is over the {limit}-byte limit")
                return
            replay = iter(buffered)

            async def replayed() -> Message:
                return next(replay, None) or await receive()

            receive = replayed
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = DOCS_HEADERS if scope["path"].startswith(DOCS_PATHS) else SECURITY_HEADERS
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, counted_receive, send_with_headers)
        except _TooLarge:
            if not started:
                await _json_error(send, 413, "body", f"request body is over the {limit}-byte limit")


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True


class LoginGuard:
    """Wrong tokens per client address: past `per_minute` in the last minute the address is refused (429)
    until the oldest of them is a minute old. Brute force goes at `per_minute` guesses a minute at most."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(address, []) if now - t < 60.0]
        if kept:
            self._failures[address] = kept
        else:
            self._failures.pop(address, None)
        return kept

    def blocked(self, address: str) -> bool:
        if self.per_minute <= 0:
            return False
        with self._lock:
            return len(self._recent(address, time.monotonic())) >= self.per_minute

    def failed(self, address: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded: forget everyone rather than grow
                self._failures.clear()
            self._failures[address] = self._recent(address, now)[-self.per_minute:] + [now]


class TTLCache:
    """A small thread-safe cache whose entries live `seconds`; None results are not cached."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, key, compute):  # noqa: ANN001, ANN201 - any key, any value
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and now - hit[0] < self.seconds:
            return hit[1]
        value = compute(key)
        if value is not None:
            with self._lock:
                if len(self._items) > 10_000:  # bounded: drop everything rather than grow
                    self._items.clear()
                self._items[key] = (now, value)
        return value
