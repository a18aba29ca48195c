"""Staying under the service's documented limits by ourselves (../shared/api/apikley.md, section 7).

At most 20 createTask per 10 s per account and at most 10 recordInfo per second per key. One `Pacer` per
(service, key) is shared by everything in the process (cells, the panel, batches, resume), so the limits hold
for the kernel as a whole. A 429 still happens when another process of the same account spends the budget;
the client's retry handles that.

A `SlidingWindow` hands out slots: any `window` seconds hold at most `count` of them. Taking a slot never
blocks; it says how long to wait, so a caller can queue the work instead of sleeping on the kernel thread.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CREATE_LIMIT = (20, 10.0)  # createTask: 20 per 10 s per account
QUERY_LIMIT = (10, 1.0)  # recordInfo: 10 per second per key
MARGIN = 0.05  # seconds added to each window: requests reach the service a little later or sooner than sent


class SlidingWindow:
    """At most `count` slots in any `window` seconds (plus a small margin for network jitter)."""

    def __init__(self, count: int, window: float, *, margin: float = MARGIN,
                 clock: Callable[[], float] = time.monotonic):
        if count < 1 or window <= 0:
            raise ValueError("a limit needs count >= 1 and window > 0")
        self.count, self.window, self.margin = int(count), float(window), float(margin)
        self.clock = clock
        self._slots: deque[float] = deque(maxlen=self.count)
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next free slot; returns the seconds to wait before using it (0.0: now)."""
        with self._lock:
            now = self.clock()
            due = now
            if len(self._slots) == self.count:
                due = max(now, self._slots[0] + self.window + self.margin)
            if self._slots and due < self._slots[-1]:
                due = self._slots[-1]  # slots are handed out in order
            self._slots.append(due)
            return due - now

    def try_take(self) -> float:
        """Take a slot only if one is free now: returns 0.0 (taken), else the seconds until one frees (none
        taken). The poller uses this to choose which check gets the next slot."""
        with self._lock:
            now = self.clock()
            if len(self._slots) == self.count:
                due = self._slots[0] + self.window + self.margin
                if due > now or (self._slots and self._slots[-1] > now):
                    return max(due, self._slots[-1]) - now
            elif self._slots and self._slots[-1] > now:
                return self._slots[-1] - now
            self._slots.append(now)
            return 0.0

    def wait_hint(self) -> float:
        """How long a slot taken now would wait, without taking it."""
        with self._lock:
            if len(self._slots) < self.count:
                return 0.0
            return max(0.0, self._slots[0] + self.window + self.margin - self.clock())


@dataclass(frozen=True)
class Limits:
    """An account's limits: (count, window seconds) for createTask and for recordInfo. `None`: no pacing."""

    create: tuple[int, float] | None = CREATE_LIMIT
    query: tuple[int, float] | None = QUERY_LIMIT

    @classmethod
    def off(cls) -> Limits:
        return cls(None, None)


class Pacer:
    """The createTask and recordInfo windows of one account."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self.create = SlidingWindow(*limits.create) if limits.create else None
        self.query = SlidingWindow(*limits.query) if limits.query else None

    def create_delay(self) -> float:
        return self.create.reserve() if self.create else 0.0

    def query_delay(self) -> float:
        return self.query.reserve() if self.query else 0.0

    def try_create(self) -> float:
        return self.create.try_take() if self.create else 0.0

    def try_query(self) -> float:
        return self.query.try_take() if self.query else 0.0


ENV = "APIKLEY_LIMITS"


def limits_from_env(value: str | None) -> Limits:
    """The limits `APIKLEY_LIMITS` names: unset or empty for the documented ones, `off` for none, or
    `create=20/10,query=10/1` (count/seconds; either part may be left out, or set to `off`)."""
    text = (value or "").strip().lower()
    if not text:
        return Limits()
    if text in ("off", "none", "0"):
        return Limits.off()
    parts: dict[str, tuple[int, float] | None] = dict(CREATE=CREATE_LIMIT, QUERY=QUERY_LIMIT)
    for item in text.split(","):
        name, _, spec = item.partition("=")
        name, spec = name.strip().upper(), spec.strip()
        try:
            if name not in parts:
                raise ValueError(name)
            if spec == "off":
                parts[name] = None
            else:
                count, window = spec.split("/")
                limit = (int(count), float(window))
                if limit[0] < 1 or limit[1] <= 0:
                    raise ValueError(spec)
                parts[name] = limit
        except ValueError:
            from .errors import ConfigurationError

            raise ConfigurationError(f"{ENV}={value!r} is not understood; write for example "
                                     "'create=20/10,query=10/1' (count/seconds) or 'off'.") from None
    return Limits(parts["CREATE"], parts["QUERY"])


_PACERS: dict[tuple[str, str, Limits], Pacer] = {}
_PACERS_LOCK = threading.Lock()


def shared_pacer(base_url: str, api_key: str | None, limits: Limits = Limits()) -> Pacer:
    """The process-wide pacer for this service and key (the key is only hashed, never kept)."""
    who = hashlib.sha256((api_key or "").encode()).hexdigest()[:16]
    with _PACERS_LOCK:
        return _PACERS.setdefault((base_url.rstrip("/"), who, limits), Pacer(limits))
