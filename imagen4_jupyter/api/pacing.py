"""Staying under the service's documented limits by ourselves (../shared/api/apikley.md, section 7).

At most 20 createTask per 10 s per account and at most 10 recordInfo per second per key. One `Pacer` per
(service, key) is shared by everything in the process (cells, the panel, batches, resume), and its windows are
shared by every process of this user on this machine with the same address and key (`SharedWindow`: a small
file-locked state under `$XDG_RUNTIME_DIR/imagen4_jupyter/pacing/` or `~/.cache/imagen4_jupyter/pacing/`,
named by a hash of the address and key, never the key), so two kernels of one account stay within the limits
together. Processes on other machines still meet 429s; the sender's retry handles those.

A `SlidingWindow` hands out slots: any `window` seconds hold at most `count` of them. Taking a slot never
blocks; it says how long to wait, so a caller can queue the work instead of sleeping on the kernel thread.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: each process paces on its own
    fcntl = None  # type: ignore[assignment]  # no fcntl (Windows): each process paces on its own

log = logging.getLogger("imagen4_jupyter")
CREATE_LIMIT = (20, 10.0)  # createTask: 20 per 10 s per account
QUERY_LIMIT = (10, 1.0)  # recordInfo: 10 per second per key
MARGIN = 0.05  # seconds added to each window: requests reach the service a little later or sooner than sent
SHARED_MARGIN = 0.1  # the same across processes: more threads between a slot taken and its request's arrival


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


_OWNER: tuple[int, str] | None = None


def process_owner() -> str:
    """This process's name in shared state: host, pid and a random part (a pid is reused, and another PID
    namespace may have the same one), made again after a fork."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:
        host = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in socket.gethostname())
        _OWNER = (pid, f"{host[:60] or 'host'}-{pid}-{secrets.token_hex(4)}")  # a file name, and a lease's
    return _OWNER[1]


STALE_WAITER = 1.0  # a process that said it would come back for a slot and did not, this long after: skipped
WAITER_POLL = 0.02  # seconds a process waits while another one, ahead of it, is about to take the free slot


class SharedWindow(SlidingWindow):
    """A `SlidingWindow` whose slots live in a small file shared by every process of this user on this machine
    (`path`, under an `fcntl` lock that the OS releases if its holder dies), on the wall clock.

    Fair across processes: a process that finds no free slot writes down when it began waiting, and a freed slot
    goes to the process that has waited longest; one that has just taken a slot waits behind the others for its
    next one, so a large batch in one kernel never starves another kernel's single cell. The slots of the last
    `keep` seconds are kept with their owner, so a price probe can ask whether a neighbour sent meanwhile
    (`others_between`). Any failure to use the file (no such folder, read-only, no fcntl) falls back to this
    process's own window, with one log line."""

    def __init__(self, count: int, window: float, path: str | os.PathLike, *, margin: float = SHARED_MARGIN,
                 keep: float | None = None, owner: str | None = None):
        super().__init__(count, window, margin=margin, clock=time.time)
        self.path = Path(path)
        self.keep = max(float(keep or 0.0), self.window + self.margin)
        self._owner = owner
        self._fd: int | None = None
        self._broken = fcntl is None

    @property
    def owner(self) -> str:
        return self._owner or process_owner()

    # -- the file -----------------------------------------------------------------------------
    def _open(self) -> int | None:
        if self._broken:
            return None
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as err:
                self._broken = True
                log.warning("imagen4: the shared pacing state %s cannot be used (%s); this process paces on its "
                            "own", self.path, err.strerror or err)
                return None
        return self._fd

    def _load(self, fd: int, now: float) -> dict:
        try:
            raw = os.pread(fd, 1 << 20, 0)
            state = json.loads(raw) if raw else {}
            slots = [(float(t), str(o)) for t, o in state.get("slots", [])]
            waiting = {str(o): (float(a), float(b)) for o, (a, b) in state.get("waiting", {}).items()}
        except (ValueError, TypeError, AttributeError, OSError):
            slots, waiting = [], {}  # a torn or foreign file: start again (at worst one window's slots are lost)
        slots = sorted(s for s in slots if s[0] > now - self.keep and s[0] < now + 3600)
        waiting = {o: w for o, w in waiting.items() if w[1] + STALE_WAITER > now}
        return {"slots": slots, "waiting": waiting}

    def _store(self, fd: int, state: dict) -> None:
        data = json.dumps({"slots": [[t, o] for t, o in state["slots"]],
                           "waiting": {o: [a, b] for o, (a, b) in state["waiting"].items()}},
                          separators=(",", ":")).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def _shared(self, fn: Callable[[dict, float], float], *, write: bool = True) -> float | None:
        """Run `fn(state, now)` under the file lock (and this process's lock); None when the file cannot be
        used (the caller then uses this process's own window)."""
        with self._lock:
            fd = self._open()
            if fd is None:
                return None
            try:
                assert fcntl is not None
                fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                try:
                    now = self.clock()
                    state = self._load(fd, now)
                    result = fn(state, now)
                    if write:
                        self._store(fd, state)
                    return result
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as err:
                self._broken = True
                log.warning("imagen4: the shared pacing state %s failed (%s); this process paces on its own",
                            self.path, err.strerror or err)
                return None

    # -- the window ---------------------------------------------------------------------------
    def _due(self, slots: list[tuple[float, str]], now: float) -> float:
        """When the next slot may be used: the count-th last slot's end, and never before the last one."""
        last = [t for t, _ in slots[-self.count:]]
        due = now
        if len(last) == self.count:
            due = max(now, last[0] + self.window + self.margin)
        if last and due < last[-1]:
            due = last[-1]
        return due

    def reserve(self) -> float:
        def take(state: dict, now: float) -> float:
            due = self._due(state["slots"], now)
            state["slots"].append((due, self.owner))
            return due - now

        got = self._shared(take)
        return super().reserve() if got is None else got

    def try_take(self) -> float:
        me = self.owner

        def take(state: dict, now: float) -> float:
            wait = self._due(state["slots"], now) - now
            waiting = state["waiting"]
            since = waiting.get(me, (now, now))[0]
            ahead = [o for o, (a, _) in waiting.items() if o != me and (a, o) < (since, me)]
            if wait <= 0 and ahead:
                wait = WAITER_POLL  # a process that waited longer is about to take this slot
            if wait > 0:
                waiting[me] = (since, now + wait)
                return wait
            waiting.pop(me, None)
            state["slots"].append((now, me))
            return 0.0

        got = self._shared(take)
        return super().try_take() if got is None else got

    def wait_hint(self) -> float:
        got = self._shared(lambda state, now: max(0.0, self._due(state["slots"], now) - now), write=False)
        return super().wait_hint() if got is None else got

    def others_between(self, start: float, end: float) -> bool | None:
        """True if another process took a slot between `start` and `end` (wall clock, as `time.time()`), False
        if none did, None if the shared state cannot tell (not in use, or `start` is older than it keeps)."""
        me = self.owner

        def look(state: dict, now: float) -> float:
            if start < now - self.keep:
                return -1.0
            return float(any(start <= t <= end and o != me for t, o in state["slots"]))

        got = self._shared(look, write=False)
        return None if got is None or got < 0 else bool(got)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass(frozen=True)
class Limits:
    """An account's limits: (count, window seconds) for createTask and for recordInfo. `None`: no pacing."""

    create: tuple[int, float] | None = CREATE_LIMIT
    query: tuple[int, float] | None = QUERY_LIMIT

    @classmethod
    def off(cls) -> Limits:
        return cls(None, None)


class Pacer:
    """The createTask and recordInfo windows of one account; shared with the other processes of this user on this
    machine when `state` names where (`<state>-create.json`, `<state>-query.json`)."""

    def __init__(self, limits: Limits = Limits(), state: str | os.PathLike | None = None):
        self.limits = limits
        self.create: SlidingWindow | None = None
        self.query: SlidingWindow | None = None
        if state is not None:
            base = str(state)
            self.create = SharedWindow(*limits.create, base + "-create.json", keep=CREATE_KEEP) \
                if limits.create else None
            self.query = SharedWindow(*limits.query, base + "-query.json") if limits.query else None
        else:
            self.create = SlidingWindow(*limits.create) if limits.create else None
            self.query = SlidingWindow(*limits.query) if limits.query else None

    def others_sent(self, start: float, end: float) -> bool | None:
        """True if another process of this account took a create slot between `start` and `end` (wall clock),
        False if none did, None if this pacer cannot tell (not shared, or no create limit)."""
        window = self.create
        return window.others_between(start, end) if isinstance(window, SharedWindow) else None

    def create_delay(self) -> float:
        return self.create.reserve() if self.create else 0.0

    def query_delay(self) -> float:
        return self.query.reserve() if self.query else 0.0

    def try_create(self) -> float:
        return self.create.try_take() if self.create else 0.0

    def try_query(self) -> float:
        return self.query.try_take() if self.query else 0.0


ENV = "APIKLEY_LIMITS"
DIR_ENV = "IMAGEN4_PACING_DIR"  # where the shared pacing state lives (else the runtime or cache folder)
CREATE_KEEP = 120.0  # seconds of create slots kept with their owner (what a price probe looks back on)


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


def pacing_dir() -> Path:
    """Where the shared pacing state lives: `$IMAGEN4_PACING_DIR`, else `$XDG_RUNTIME_DIR/imagen4_jupyter/pacing`
    (a per-user tmpfs, emptied at logout or boot), else `~/.cache/imagen4_jupyter/pacing`."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "imagen4_jupyter" / "pacing"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "imagen4_jupyter" / "pacing"


def state_name(base_url: str, api_key: str | None) -> str:
    """The shared state's name for this address and key: a hash of both (the key itself is never written)."""
    text = base_url.rstrip("/") + "\n" + (api_key or "")
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def shared_pacer(base_url: str, api_key: str | None, limits: Limits = Limits()) -> Pacer:
    """The pacer for this service and key, one per process, its windows shared by this user's processes on this
    machine (the key is only hashed, never kept)."""
    name = state_name(base_url, api_key)
    with _PACERS_LOCK:
        key = (base_url.rstrip("/"), name, limits)
        if key not in _PACERS:
            shared = limits.create is not None or limits.query is not None
            _PACERS[key] = Pacer(limits, pacing_dir() / name if shared else None)
        return _PACERS[key]
