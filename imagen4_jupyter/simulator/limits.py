"""Request limits: the documented sliding windows and an optional token bucket, plus window counting.

The service documents two limits (apikley.md section 7), both enforced by default:

* createTask: at most 20 new tasks per 10 seconds per *account*; over that, body code 429, not queued.
  The simulator is one account, so every key shares this window.
* recordInfo: at most 10 requests per second per *key*.

Both are :class:`WindowLimiter` (a request is admitted when fewer than ``count`` were admitted in the
last ``window`` seconds; refused requests do not use up the window). :class:`RateLimiter` is the older,
optional token bucket (``rate_limit=(N, PER_SECONDS)``) applied per key to every authenticated endpoint.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable

#: The documented limits: (count, window seconds).
CREATE_LIMIT = (20, 10.0)
QUERY_LIMIT = (10, 1.0)


class WindowLimiter:
    """At most ``count`` admitted requests per ``window`` seconds, per bucket key."""

    def __init__(self, spec: tuple[float, float] | None) -> None:
        self.spec = spec
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, bucket: str, now_mono: float | None = None) -> int | None:
        """Admit one request for ``bucket``: None if allowed, else Retry-After seconds (>= 1)."""
        if self.spec is None:
            return None
        count, window = int(self.spec[0]), float(self.spec[1])
        now = time.monotonic() if now_mono is None else now_mono
        with self._lock:
            seen = self._seen.setdefault(bucket, deque())
            while seen and seen[0] <= now - window:
                seen.popleft()
            if len(seen) < count:
                seen.append(now)
                return None
            wait = seen[0] + window - now
        return max(1, math.ceil(wait))


class RateLimiter:
    """Token bucket per API key: ``max_requests`` per ``per_seconds``."""

    def __init__(self, spec: tuple[float, float] | None) -> None:
        self.spec = spec
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, now_mono: float | None = None) -> int | None:
        """Take a token for ``key``; None if allowed, else Retry-After seconds (>= 1)."""
        if self.spec is None:
            return None
        capacity, per = float(self.spec[0]), float(self.spec[1])
        rate = capacity / per if per > 0 else math.inf
        now = time.monotonic() if now_mono is None else now_mono
        with self._lock:
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
        wait = (1.0 - tokens) / rate if rate > 0 else 3600.0
        return max(1, math.ceil(wait))


def max_in_window(times: Iterable[float], window: float) -> int:
    """The most ``times`` that fall within any ``window`` seconds (a half-open interval [t, t + window))."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class Limits:
    """Everything that can answer 429: the optional token bucket and the documented windows, with a tally."""

    def __init__(
        self,
        rate_limit: tuple[float, float] | None,
        create_limit: tuple[float, float] = CREATE_LIMIT,
        query_limit: tuple[float, float] = QUERY_LIMIT,
        enforce: bool = True,
    ) -> None:
        #: Whether the documented windows apply (the token bucket applies whenever it is set).
        self.enforce = enforce
        self.bucket = RateLimiter(rate_limit)
        self.create = WindowLimiter(create_limit)
        self.query = WindowLimiter(query_limit)
        self._throttled: list[str] = []
        self._lock = threading.Lock()

    def check(self, endpoint: str, key: str) -> int | None:
        """None if the request may go on, else Retry-After seconds (and the 429 is tallied)."""
        retry = self.bucket.check(key)
        if retry is None and self.enforce:
            if endpoint == "createTask":
                retry = self.create.check("account")  # per account: every key of the simulator shares it
            elif endpoint == "recordInfo":
                retry = self.query.check(key)
        if retry is not None:
            with self._lock:
                self._throttled.append(endpoint)
        return retry

    def count_429(self, endpoint: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self._throttled if endpoint in (None, e))

    def reset(self) -> None:
        with self._lock:
            self._throttled.clear()
