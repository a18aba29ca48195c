"""When to ask next: the backoff after an error (`RetryPolicy`, `Retry-After`), the provider's advised
`PollSchedule`, and the learning `SmartSchedule`.

Smart polling: sparse while queued, dense only around the predicted end of generation.

Time in the queue varies with load; time spent generating is steady for a given aspect ratio and image
count. When a check first sees `generating`, the record's `updateTime` says when generation started (server
clock, mapped to ours through `createTime`). From generation durations seen before (this session, or the
history), completion is predicted; no request is spent until just before the earliest likely moment, then
checks come every `fine` seconds until the latest likely moment. With nothing learned yet, the provider's
advised schedule applies unchanged.
"""
from __future__ import annotations

import math
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .job import Job
from .models import DEFAULT_MODEL
from .task import TaskRecord

MIN_SAMPLES = 3


@dataclass
class RetryPolicy:
    """The package's one backoff: exponential with full jitter; `Retry-After` is honoured up to
    `max_retry_after` seconds. `attempts` bounds the client's own retries of one request."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 20.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to pause before retry number `attempt` (0 for the first): a random draw from
        [0, min(cap, base * 2**attempt)]; when the service sent `retry_after` seconds, that (capped at
        `max_retry_after`), but never less than a tenth of the draw."""
        backoff = random.uniform(0, min(self.cap, self.base * 2 ** attempt))
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), backoff * 0.1)
        return backoff


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header, or None if absent or unreadable.

    urllib3 reads the standard forms (whole seconds, an HTTP date; a date in the past is 0). A decimal number
    of seconds, which the RFC does not allow but some servers (and the simulator's sub-second faults) send, is
    read as such, a negative one as 0. The cap (60 s by default) is `RetryPolicy.max_retry_after`'s.
    """
    if not value:
        return None
    from urllib3.exceptions import InvalidHeader
    from urllib3.util import Retry

    try:
        return float(Retry().parse_retry_after(value))
    except InvalidHeader:
        pass
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class Schedule(Protocol):
    """What the poller asks a schedule: the pause before the next status check, and the overall limit."""

    @property
    def max_wait(self) -> float: ...

    def next_delay(self, job: Job, now: float) -> float: ...

    def priority(self, job: Job, now: float, due: float) -> float: ...


def overdue_share(job: Job, now: float, due: float, advised: float) -> float:
    """How far past its due time a check is, in advised intervals: what keeps every task fed when the query
    budget, not the schedule, is the limit (a task waiting longer climbs above the likely ones)."""
    return max(0.0, now - due) / max(advised, 1e-3)


@dataclass(frozen=True)
class PollSchedule:
    """The provider's advice: every 2-3 s for 30 s, 5-10 s until 2 min, 15-30 s after; give up at 15 min.

    `phases` are (until elapsed seconds, interval seconds); `max_wait` is the overall limit.
    """

    phases: tuple[tuple[float, float], ...] = ((30.0, 2.5), (120.0, 7.5), (math.inf, 22.5))
    max_wait: float = 900.0

    @classmethod
    def fixed(cls, interval: float, max_wait: float = 900.0) -> "PollSchedule":
        return cls(phases=((math.inf, interval),), max_wait=max_wait)

    def scaled(self, factor: float) -> "PollSchedule":
        """The same shape with every time multiplied by `factor` (tests and benchmarks)."""
        return PollSchedule(tuple((u * factor, i * factor) for u, i in self.phases), self.max_wait * factor)

    def next_delay(self, job: Job, now: float) -> float:
        """Seconds until the next check of `job`, by the time elapsed since it was created."""
        elapsed = now - job.created_at
        for until, interval in self.phases:
            if elapsed < until:
                return interval
        return self.phases[-1][1]

    def priority(self, job: Job, now: float, due: float) -> float:
        """Which due check gets the next query slot: the one waiting longest (this schedule knows no more)."""
        return overdue_share(job, now, due, self.next_delay(job, now))


def _key(job: Job) -> tuple[str, int, str]:
    req = job.request
    return (req.aspect_ratio, req.num_images, req.model) if req else ("?", 0, DEFAULT_MODEL)


@dataclass
class SmartSchedule:
    """Learns generation durations and polls densely only where completion is likely.

    `queue_interval`: the shortest interval while waiting/queuing; `fine`: interval inside the predicted window;
    `low`/`high`: quantiles of the learned durations that bound the window; `margin`: seconds added on
    both sides. Falls back to `fallback` (the provider's advice) while fewer than MIN_SAMPLES are known.
    """

    fallback: PollSchedule = field(default_factory=PollSchedule)
    queue_interval: float = 3.0
    fine: float = 0.3
    low: float = 0.05
    high: float = 0.95
    margin: float = 0.1
    max_samples: int = 200
    _samples: dict = field(default_factory=lambda: defaultdict(list), repr=False)  # key -> durations, oldest first
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def scaled(self, factor: float) -> "SmartSchedule":
        """The same schedule with every time multiplied by `factor` (tests and benchmarks); learns afresh."""
        return SmartSchedule(fallback=self.fallback.scaled(factor), queue_interval=self.queue_interval * factor,
                             fine=self.fine * factor, low=self.low, high=self.high, margin=self.margin * factor,
                             max_samples=self.max_samples)

    @property
    def max_wait(self) -> float:
        return self.fallback.max_wait

    # -- learning -----------------------------------------------------------------------------
    def learn(self, aspect_ratio: str, num_images: int, seconds: float, model: str = DEFAULT_MODEL) -> None:
        """Record one observed generation duration (seconds from `generating` to completion), per model, ratio
        and image count (and per model overall, the fallback while a combination has few samples)."""
        if not (0 < seconds < 3600):
            return
        with self._lock:
            for key in ((aspect_ratio, num_images, model), ("*", 0, model)):
                samples = self._samples[key]
                samples.append(seconds)
                if len(samples) > self.max_samples:  # keep the newest: durations drift as the service changes
                    del samples[0]

    def observe(self, job: Job) -> None:
        """Learn from a finished job whose generation start and completion times are known."""
        rec = job.record
        start = job.generating_since_ms
        if rec is None or start is None or job.error is not None or not rec.complete_time_ms:
            return
        ratio, n, model = _key(job)
        self.learn(ratio, n, (rec.complete_time_ms - start) / 1000.0, model)

    def window(self, job: Job) -> tuple[float, float] | None:
        """(earliest, latest) likely generation durations for this job, or None if not enough known."""
        with self._lock:
            key = _key(job)
            samples = self._samples.get(key) or []
            if len(samples) < MIN_SAMPLES:
                samples = self._samples.get(("*", 0, key[2])) or []
            if len(samples) < MIN_SAMPLES:
                return None
            samples = sorted(samples)  # at most max_samples (200): microseconds
            n = len(samples)
            lo = samples[max(0, math.floor(self.low * (n - 1)))]
            hi = samples[min(n - 1, math.ceil(self.high * (n - 1)))]
        return max(0.0, lo - self.margin), hi + self.margin

    # -- scheduling ---------------------------------------------------------------------------
    def next_delay(self, job: Job, now: float) -> float:
        """Seconds until the next check of `job`: sparse while queued, dense inside the predicted window."""
        rec = job.record
        if rec is None or rec.state in ("waiting", "queuing"):
            win = self.window(job)
            if win is None:
                return self.fallback.next_delay(job, now)
            # one check anywhere in the generating phase reveals its start (updateTime), so while queued it
            # is enough to look a little more often than the shortest generation lasts
            return max(self.queue_interval, 0.8 * win[0])
        if rec.state != "generating":
            return self.fallback.next_delay(job, now)
        start_local = self._generation_start(job, rec, now)
        win = self.window(job)
        if win is None:
            return self.fallback.next_delay(job, now)
        earliest, latest = start_local + win[0], start_local + win[1]
        if now < earliest - self.fine:
            return earliest - now
        if now <= latest:
            return self.fine
        # later than anything seen before: back off gradually towards the advised schedule
        return min(self.fallback.next_delay(job, now), max(self.fine, (now - latest) / 2))

    def likelihood(self, job: Job, now: float) -> float:
        """How likely `job` is finished by `now`, 0 to 1: the share of learned durations (this model, ratio and
        image count) it has already been generating for. Queued or unknown: a low prior (a check still tells
        when generation starts)."""
        rec = job.record
        if rec is None or rec.state in ("waiting", "queuing") or job.generating_since_ms is None:
            return 0.1
        key = _key(job)
        with self._lock:
            samples = self._samples.get(key) or []
            if len(samples) < MIN_SAMPLES:
                samples = self._samples.get(("*", 0, key[2])) or []
            samples = list(samples)
        if len(samples) < MIN_SAMPLES:
            return 0.5
        generating_for = now - self._generation_start(job, rec, now) + self.margin
        return sum(1 for s in samples if s <= generating_for) / len(samples)

    def priority(self, job: Job, now: float, due: float) -> float:
        """Which due check gets the next query slot when the budget is short: likely completions first, and
        a check overdue by a whole advised interval counts as much as a certain one (nobody starves)."""
        return self.likelihood(job, now) + overdue_share(job, now, due, self.fallback.next_delay(job, now))

    def _generation_start(self, job: Job, rec: TaskRecord, now: float) -> float:
        """Local time when generation started, from the record's server times (`rec`, the job's last record;
        remembered on the job as `generating_since_ms` and `clock_offset`, the server-to-local difference)."""
        if job.generating_since_ms is None:
            server_start = rec.update_time_ms if rec.update_time_ms else None
            job.generating_since_ms = server_start if server_start else int(now * 1000)
            job.add_done_callback(self.observe)
            if rec.create_time_ms and server_start:
                job.clock_offset = job.created_at - rec.create_time_ms / 1000.0
            else:
                job.clock_offset = now - job.generating_since_ms / 1000.0
        return job.generating_since_ms / 1000.0 + job.clock_offset


def seed_from_history(schedule: Any, history: Any, limit: int = 1000) -> int:
    """Teach a learning schedule the generation durations of the newest `limit` successes in `history`
    (their `succeeded` events record `generating_since_ms` and `complete_time_ms`). Returns how many were
    learned; a schedule without `learn` (fixed, advised) is left alone."""
    learn = getattr(schedule, "learn", None)
    if not callable(learn):
        return 0
    samples = []
    for entry in reversed(history.entries()):
        start, end, req = entry.generating_since_ms, entry.complete_time_ms, entry.request or {}
        if not (entry.succeeded and isinstance(start, int) and isinstance(end, int)):
            continue
        try:
            samples.append((str(req.get("aspect_ratio") or "1:1"), int(req.get("num_images") or 1),
                            (end - start) / 1000.0, str(req.get("model") or DEFAULT_MODEL)))
        except (TypeError, ValueError):
            continue
        if len(samples) >= limit:
            break
    for ratio, n, seconds, model in reversed(samples):  # oldest first, as they happened
        learn(ratio, n, seconds, model)
    return len(samples)


def schedule_for(poll_interval: float, timeout: float) -> Schedule:
    """The schedule of the magic's traits: fixed polling every `poll_interval` seconds when it is above 0, else
    the learning `SmartSchedule`; either gives up after `timeout` seconds."""
    if poll_interval > 0:
        return PollSchedule.fixed(poll_interval, max_wait=timeout)
    return SmartSchedule(fallback=replace(PollSchedule(), max_wait=timeout))
