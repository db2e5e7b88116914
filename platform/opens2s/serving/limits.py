"""Limits and auth of client traffic: bearer tokens and a message-rate limiter."""

from __future__ import annotations

import hmac
import time


def token_ok(expected: str | None, authorization: str | None, query_token: str | None) -> bool:
    """Whether a request carries the configured token.

    HTTP clients send ``Authorization: Bearer <token>``; browsers cannot set headers on a
    WebSocket, so ``?token=<token>`` is accepted too. ``expected`` None means auth is off.
    """
    if expected is None:
        return True
    given = None
    if authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    elif query_token:
        given = query_token
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class RateLimiter:
    """Token bucket: ``rate`` units a second on average, bursts of ``capacity`` (2 x rate)."""

    def __init__(self, rate: float, capacity: float | None = None, clock=time.monotonic) -> None:
        self.rate = rate
        self.capacity = 2.0 * rate if capacity is None else capacity
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def allow(self, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens; False when the client sends faster than allowed."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True
