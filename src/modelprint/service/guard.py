"""The checks every ``/v1`` request passes before the app sees it, as one ASGI middleware, in this order:

1. body size: a body over ``max_upload_bytes`` (its ``Content-Length``) is refused with 413 unread; a body of
   unknown length (chunked) with 411;
2. bearer token (when tokens are configured; ``/v1/health`` is open): compared with every token in constant time
   (:func:`hmac.compare_digest`); missing or wrong is 401;
3. rate: a token bucket per token (per client address without tokens); empty is 429 with ``Retry-After``;
4. admission: a ``POST`` (the requests that decode and embed images) takes one of ``workers + queue`` slots; none
   free is 503 with ``Retry-After``, so a burst waits in a bounded queue or is turned away, and memory stays
   bounded by the slots times the body limit.

Every refusal is JSON ``{"detail": "<one line>"}``.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelprint.service.settings import Settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
OPEN_PATHS = ("/v1/health",)


class TokenBuckets:
    """``rate`` tokens a second up to ``burst``, per key."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = float(rate), int(burst), clock
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 if a request of ``key`` may go now (and count it), else the seconds until it may."""
        now = self.clock()
        level, then = self._state.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - then) * self.rate)
        if level >= 1.0:
            self._state[key] = (level - 1.0, now)
            return 0.0
        self._state[key] = (level, now)
        return (1.0 - level) / self.rate


async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error response ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The ASGI middleware of the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.tokens = [t.encode() for t in settings.tokens]
        self.buckets = TokenBuckets(settings.rate, settings.burst)
        self.slots = settings.workers + settings.queue
        self.busy = 0

    def _token(self, headers: dict[bytes, bytes]) -> int | None:
        """Index of the token the ``Authorization: Bearer`` header carries, or ``None``."""
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        given = given.strip()
        found = None
        for i, token in enumerate(self.tokens):  # every token compared: the time does not tell which one matched
            if hmac.compare_digest(given, token):
                found = i
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is None and b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await send_error(send, 411, "a request body needs a Content-Length header")
            return
        limit = self.settings.max_upload_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            await send_error(send, 413, f"request body is {length.decode(errors='replace')} bytes, over the "
                                        f"limit of {limit:,} bytes")
            return
        key = f"client {(scope.get('client') or ('?',))[0]}"
        if self.tokens:
            index = self._token(headers)
            if index is None:
                why = "wrong bearer token" if b"authorization" in headers else "missing bearer token"
                await send_error(send, 401, f"{why} (send Authorization: Bearer <token>)",
                                 {"www-authenticate": "Bearer"})
                return
            key = f"token {index}"
        wait = self.buckets.take(key)
        if wait:
            await send_error(send, 429, f"rate limit of {self.settings.rate:g} requests/s (burst "
                                        f"{self.settings.burst}) reached; retry later",
                             {"retry-after": str(max(1, math.ceil(wait)))})
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        if self.busy >= self.slots:
            await send_error(send, 503, f"server busy ({self.settings.workers} workers, {self.settings.queue} "
                                        "queued requests); retry later", {"retry-after": "1"})
            return
        self.busy += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.busy -= 1
