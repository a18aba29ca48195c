"""Who owns a queued request, and whether that owner still lives: a lease per kernel in the `.imagen4` folder.

A kernel that queues a request first takes its lease, `.imagen4/leases/<owner>.json`: it holds an `fcntl` lock on
that file for as long as it lives (the OS drops the lock when the process dies) and rewrites the file's heartbeat
every `REFRESH` seconds from a small daemon thread. Each `queued` event names its owner (`"owner"`).

`owner_state(event, folder)` judges the owner of a queued request:
- "mine": this process holds that lease;
- "alive": its lock is held (proven, wherever the holder runs, as far as the file system's locks reach), or its
  heartbeat is younger than the lease's lapse time;
- "lapsed": its lock is free and either its holder ran on this very machine (same host identity: the lock is
  then the proof, the process is gone) or its heartbeat is older than the lapse time (another machine sharing
  the folder over NFS, a pod, a container with its own PID namespace);
- "unknown": no owner recorded (an older version), no lease file, or a lease that cannot be read.
Resume sends a request only when its owner's lease has lapsed; in doubt it reports and sends nothing.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..api.pacing import process_owner

try:
    import fcntl
except ImportError:  # Windows: no lock proof, only heartbeats
    fcntl = None  # type: ignore[assignment]  # no fcntl (Windows): leases are heartbeats only

LEASES = "leases"
REFRESH = 5.0  # seconds between heartbeats
LAPSE = 60.0  # a heartbeat older than this (and a free lock) means the owner is gone: well above REFRESH, and
#               above the clock skew of machines that share a folder
LAPSE_ENV = "IMAGEN4_LEASE_LAPSE"  # seconds; the heartbeat then comes every lapse / 12 (at most REFRESH)
HOST_ENV = "IMAGEN4_HOST_ID"  # this machine's identity, when hostname and boot id do not tell machines apart
OLD = 7 * 24 * 3600.0  # lapsed leases older than this are removed when a kernel takes its own
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def host_identity() -> str:
    """This machine's identity: `$IMAGEN4_HOST_ID`, else its hostname and its kernel's boot id (two containers
    with one hostname on two machines differ; two on one machine share the kernel, so their locks are seen)."""
    if os.environ.get(HOST_ENV):
        return os.environ[HOST_ENV]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def lapse_time() -> float:
    try:
        value = float(os.environ.get(LAPSE_ENV) or LAPSE)
    except ValueError:
        value = LAPSE
    return max(0.5, value)


class Lease:
    """This process's lease on its queue in one `.imagen4` folder: the lock, held for life, and a heartbeat."""

    def __init__(self, folder: str | os.PathLike, *, lapse: float | None = None):
        self.folder = Path(folder) / LEASES
        self.name = process_owner()
        self.path = self.folder / f"{self.name}.json"
        self.lapse = lapse if lapse is not None else lapse_time()
        self.refresh = min(REFRESH, self.lapse / 12)
        self.started = time.time()
        self._fd: int | None = None
        self._stop = threading.Event()

    def take(self) -> Lease:
        """Create the lease file, lock it and write the first heartbeat (raises OSError), then keep it fresh."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without locks: the heartbeat alone speaks for this kernel
        self._fd = fd
        self.beat()
        self._sweep()
        threading.Thread(target=self._run, name="imagen4-lease", daemon=True).start()
        return self

    def beat(self) -> None:
        """Write the heartbeat: who holds this lease, where, and when it was last seen alive."""
        if self._fd is None:
            return
        data = json.dumps({"owner": self.name, "pid": os.getpid(), "host": host_identity(),
                           "hostname": socket.gethostname(), "started": self.started, "refreshed": time.time(),
                           "lapse": self.lapse}).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def _run(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.beat()
            except OSError:
                pass  # the next beat tries again; a lease that lapses only makes resume wait or send nothing

    def _sweep(self) -> None:
        """Remove leases that lapsed long ago (their owners are gone and their requests long resolved)."""
        try:
            for path in self.folder.glob("*.json"):
                if path != self.path and time.time() - path.stat().st_mtime > OLD and \
                        owner_state({"owner": path.stem}, self.folder.parent) == "lapsed":
                    path.unlink(missing_ok=True)
        except OSError:
            pass

    def stop(self) -> None:
        self._stop.set()


_LEASES: dict[tuple[int, str], Lease] = {}
_LEASES_LOCK = threading.Lock()


def hold_lease(folder: str | os.PathLike) -> Lease:
    """This process's lease in `folder` (a `.imagen4` folder), taken on first use; raises OSError if it cannot be
    written."""
    key = (os.getpid(), str(Path(folder).resolve()))
    with _LEASES_LOCK:
        lease = _LEASES.get(key)
        if lease is None:
            lease = _LEASES[key] = Lease(folder).take()
        return lease


def _mine(owner: str) -> bool:
    with _LEASES_LOCK:
        return any(pid == os.getpid() and lease.name == owner for (pid, _), lease in _LEASES.items())


def owner_state(event: dict[str, Any], folder: str | os.PathLike) -> str:
    """Whether the kernel that queued `event` may still send it: "mine", "alive", "lapsed" or "unknown" (see the
    module's docstring). Only "lapsed" lets another kernel send it."""
    owner = event.get("owner")
    if not isinstance(owner, str) or not _NAME.match(owner):
        return "unknown"
    if _mine(owner):
        return "mine"
    path = Path(folder) / LEASES / f"{owner}.json"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "unknown"
    try:
        locked: bool | None = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                locked = False
            except BlockingIOError:
                locked = True
            except OSError:
                locked = None  # no locks here: the heartbeat decides
        if locked:
            return "alive"
        try:
            lease = json.loads(os.pread(fd, 1 << 16, 0))
            refreshed, lapse, host = float(lease["refreshed"]), float(lease.get("lapse") or LAPSE), lease["host"]
        except (OSError, ValueError, TypeError, KeyError):
            return "unknown"
    finally:
        os.close(fd)
    if locked is False and host == host_identity():
        return "lapsed"  # the same machine: the OS released the lock, so the process is gone
    return "lapsed" if time.time() - refreshed > lapse else "alive"  # a heartbeat from the future: alive


def held_line(held: list[dict[str, Any]]) -> str:
    """One line for requests resume left alone because their kernel may still send them."""
    owners = sorted({str(ev.get("owner") or "an older kernel") for ev in held})
    return (f"{len(held)} queued request(s) of another kernel ({', '.join(owners[:3])}"
            f"{' ...' if len(owners) > 3 else ''}) not sent: it may still be running (its lease is fresh, or "
            "cannot be read), so it sends them itself; run resume again once it has stopped.")
