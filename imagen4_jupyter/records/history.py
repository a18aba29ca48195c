"""Per-notebook history: an append-only JSON Lines event log in `.imagen4/` beside the notebook.

Events: `submitted` (written before polling starts), `state`, `succeeded`, `failed`, `outcome_unknown`,
`credits`, `reused` (a task of another history of the folder). Lines are appended under an exclusive lock in
one write; the file is never rewritten. Reading is incremental (only new bytes are parsed) so lookups stay
fast at 10,000 tasks.
"""
from __future__ import annotations

import errno
import gc
import json
import os
import pickle
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # no fcntl on Windows: the history is written without a file lock

from ..api.request import GenerationRequest
from ..api.store import StoredImage, store_digest, write_atomic
from .entries import ENTRY_FIELDS, TaskEntry, recorded_cost

INDEX_EVERY = 1 << 20  # bytes of log parsed between index snapshots (and the smallest log that gets one)
INDEX_FORMAT = 2  # 2: the send queue's waiting requests are part of the snapshot


@contextmanager
def _no_gc():
    """Pause the cyclic garbage collector while building many small containers (a bulk load of the history
    creates ~100,000 dicts and lists, none cyclic; the collector's passes over them cost about 40% extra)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _PlainUnpickler(pickle.Unpickler):
    """Builtin types only: an index file can name no class or function, so loading one runs no code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a history index")


class History:
    """Reads and appends one history file. Thread-safe within a process, lock-safe across processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.folder = self.path.parent
        self._lock = threading.RLock()  # made once: a reset keeps it (a thread inside may hold it)
        self._reset()

    def _reset(self) -> None:
        """Forget everything read so far (the file was replaced): the next refresh reads it from the start."""
        self.tasks: dict[str, TaskEntry] = {}
        self.unknown: list[dict] = []
        self.queue: dict[str, dict] = {}  # local id -> a `queued` event not yet ended (+ "sending": True once sent)
        self.by_key: dict[str, list[str]] = {}
        self.bad_lines = 0
        self._offset = 0
        self._partial = b""
        self._warned = False
        self._indexed = 0  # the log offset the index file (a snapshot of the folded state) covers

    # -- writing ------------------------------------------------------------------------------
    def append(self, event: dict) -> None:
        """Append one event as one line, under an exclusive lock; never touches earlier lines. Raises OSError when
        the line could not be written whole (a read-only folder or file, a full disk): nothing of it is left."""
        event = {"v": 1, "time": round(time.time(), 3), **event}
        line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # RDWR: pread checks the last byte
            try:
                if fcntl:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    size = os.fstat(fd).st_size
                    if size and not self._ends_with_newline(fd, size):
                        line = b"\n" + line  # a torn last line from a crash stays on its own line
                    written = os.write(fd, line)
                    if written != len(line):  # a full disk: undo the torn part, never leave half a line
                        os.ftruncate(fd, size)
                        raise OSError(errno.ENOSPC, f"No space left on device (only {written} of {len(line)} "
                                      "bytes could be written; the partial line was removed)")
                    os.fsync(fd) if os.environ.get("IMAGEN4_FSYNC") else None
                finally:
                    if fcntl:
                        fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            self.refresh()

    @staticmethod
    def _ends_with_newline(fd: int, size: int) -> bool:
        return os.pread(fd, 1, size - 1) == b"\n"

    # -- reading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Parse whatever was appended since the last call (by this or any other process)."""
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                return
            if size < self._offset:  # replaced by someone else: start over
                self._reset()
            if self._offset == 0 and size >= INDEX_EVERY:
                self._load_index(size)
            if size == self._offset:
                return
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read(size - self._offset)
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()  # an incomplete last line waits for its end
            with _no_gc() if len(chunk) >= INDEX_EVERY else nullcontext():
                for raw in lines:
                    if raw.strip():
                        self._apply_line(raw)
            if self._offset - self._indexed >= INDEX_EVERY and not self._partial:
                self._save_index()
            if self.bad_lines and not self._warned:
                self._warned = True
                warnings.warn(f"imagen4: skipped {self.bad_lines} unreadable line(s) in {self.path}; "
                              "the rest of the history loaded. The file was not changed.", stacklevel=3)

    # -- the index: the folded state up to an offset, so a fresh kernel does not re-parse 10,000 tasks --
    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + ".index")

    def _load_index(self, size: int) -> None:
        """Start from the index if it matches the log's first bytes and the bytes before its offset."""
        try:
            with open(self.index_path, "rb") as fh, _no_gc():
                state = _PlainUnpickler(fh).load()
            if state["format"] != INDEX_FORMAT or state["fields"] != ENTRY_FIELDS:
                return
            offset, head, tail = state["offset"], state["head"], state["tail"]
            if not (isinstance(offset, int) and len(tail) <= offset <= size):
                return
            with open(self.path, "rb") as fh:
                if fh.read(len(head)) != head:
                    return
                fh.seek(offset - len(tail))
                if fh.read(len(tail)) != tail:
                    return
            tasks = {}
            with _no_gc():
                for row in state["tasks"]:
                    if len(row) != len(ENTRY_FIELDS) or not isinstance(row[0], str):
                        return
                    tasks[row[0]] = TaskEntry(*row)
            by_key, unknown, bad_lines = dict(state["by_key"]), list(state["unknown"]), int(state["bad_lines"])
            queue = {str(k): dict(v) for k, v in dict(state["queue"]).items()}
        except Exception:  # missing, damaged, foreign or stale: the log itself is the truth
            return
        self.tasks, self.by_key, self.unknown, self.bad_lines = tasks, by_key, unknown, bad_lines
        self.queue = queue
        self._offset = self._indexed = offset

    def _save_index(self) -> None:
        """Write the folded state as of `_offset` (a line boundary) next to the log; best effort."""
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(min(4096, self._offset))
                fh.seek(max(0, self._offset - 4096))
                tail = fh.read(self._offset - max(0, self._offset - 4096))
            state = {"format": INDEX_FORMAT, "fields": ENTRY_FIELDS, "offset": self._offset, "head": head, "tail": tail,
                     "tasks": [tuple(getattr(e, f) for f in ENTRY_FIELDS) for e in self.tasks.values()],
                     "by_key": self.by_key, "unknown": self.unknown, "bad_lines": self.bad_lines,
                     "queue": self.queue}
            write_atomic(self.index_path, pickle.dumps(state, protocol=4))
        except (OSError, pickle.PicklingError, TypeError, ValueError):
            return  # a read-only folder, say: the next kernel parses the log instead
        self._indexed = self._offset

    def _apply_line(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                raise ValueError("not an event")
            self._apply(event)
        except (ValueError, TypeError, KeyError, AttributeError):
            self.bad_lines += 1

    def _apply(self, ev: dict) -> None:
        kind = ev["event"]
        local = ev.get("local_id")
        if kind in ("queued", "sending", "not_sent", "cancelled", "outcome_unknown", "submitted") and isinstance(
                local, str):
            self._apply_queue(kind, local, ev)
        if kind == "outcome_unknown":
            self.unknown.append(ev)
            return
        if kind in ("queued", "sending", "not_sent", "cancelled"):
            return
        if kind in ("credits", "reuse"):  # a reuse of a task already known changes nothing about it (spend.py)
            return
        tid = ev["task_id"]
        if not isinstance(tid, str):
            raise TypeError("task_id")
        entry = self.tasks.get(tid)
        if entry is None:
            entry = self.tasks[tid] = TaskEntry(task_id=tid)
        if kind == "reused":  # a task of another history of the folder (records/folder.py): submitted and succeeded
            self._apply({**ev, "event": "submitted", "time": ev.get("submitted_at")})
            self._apply({**ev, "event": "succeeded", "time": ev.get("finished_at")})
            entry.origin = ev["from"] if isinstance(ev.get("from"), str) else None
            return
        if kind == "submitted":
            req = ev.get("request")
            if not isinstance(req, dict):
                raise TypeError("request")
            entry.request, entry.request_key = req, ev.get("request_key")
            entry.submitted_at, entry.cell, entry.source = ev.get("time"), ev.get("cell"), ev.get("source")
            entry.credits_before = ev.get("credits_before")
            entry.local_id = ev.get("local_id") if isinstance(ev.get("local_id"), str) else None
            cost = recorded_cost(ev.get("cost"))
            if cost is not None and not ev.get("from"):  # a reuse from another history cost this one nothing
                entry.credits, entry.credits_measured = cost
        elif kind == "state":
            if not entry.succeeded:  # the service said success, but the images are not stored yet
                entry.state = "downloading" if ev["state"] == "success" else str(ev["state"])
        elif kind == "succeeded":
            images = ev.get("images") or []
            if not isinstance(images, list):
                raise TypeError("images")
            entry.state, entry.urls, entry.images, entry.error = "success", list(ev.get("urls") or []), images, None
            entry.succeeded = True
            entry.cost_time_ms, entry.finished_at = ev.get("cost_time_ms"), ev.get("time")
            entry.generating_since_ms = ev.get("generating_since_ms")
            entry.complete_time_ms = ev.get("complete_time_ms")
            if entry.request_key:
                keys = self.by_key.setdefault(entry.request_key, [])
                if tid not in keys:
                    keys.append(tid)
        elif kind == "failed":
            if not entry.succeeded:
                entry.state = "fail" if ev.get("final") else "error"
                entry.error = {k: ev.get(k) for k in ("code", "kind", "message", "final")}
                entry.finished_at = ev.get("time")
        elif kind == "credits_after":
            entry.credits_after = ev.get("credits")
        elif kind == "cost" and (cost := recorded_cost(ev)) is not None:  # a measurement replaced the estimate
            entry.credits, entry.credits_measured = cost

    def _apply_queue(self, kind: str, local: str, ev: dict) -> None:
        if kind == "queued":
            self.queue[local] = {**ev, "sending": False}
        elif kind == "sending":
            if local in self.queue:
                self.queue[local]["sending"] = True
            elif isinstance(ev.get("request"), dict):  # sent at once, without waiting: written ahead of it
                self.queue[local] = {**ev, "sending": True}
        else:  # it has an end: a task id, an unknown outcome, or certainly nothing sent
            self.queue.pop(local, None)

    # -- queries ------------------------------------------------------------------------------
    def entries(self) -> list[TaskEntry]:
        self.refresh()
        return list(self.tasks.values())

    def get(self, task_id: str) -> TaskEntry | None:
        self.refresh()
        return self.tasks.get(task_id)

    def find_reusable(self, request: GenerationRequest) -> TaskEntry | None:
        """The newest succeeded task with exactly this request whose image files are all still on disk."""
        self.refresh()
        for tid in reversed(self.by_key.get(request.key(), [])):
            entry = self.tasks[tid]
            if self.images_on_disk(entry):
                return entry
        return None

    def images_on_disk(self, entry: TaskEntry) -> bool:
        """True if the entry has images and every one is a store file (`<sha256>.<ext>`) still on disk: the
        one test for "this stored result can be shown instead of asking the service"."""
        return bool(entry.images) and all(self.content_addressed(im) and self.resolve(im["path"]).exists()
                                          for im in entry.images)

    def waiting(self) -> list[dict]:
        """Requests that waited in a send queue and have no end yet (`queued` events, with `"sending": True` for
        those whose createTask may have been sent): what resume looks at after a crash."""
        self.refresh()
        return [dict(ev) for ev in self.queue.values()]

    def unfinished(self) -> list[TaskEntry]:
        """Tasks created but not finished for good: the ones `%imagen4 resume` continues."""
        self.refresh()
        return [e for e in self.tasks.values() if e.request is not None and not e.finished]

    def search(self, text: str | None = None, limit: int | None = None) -> list[TaskEntry]:
        """Newest first; `text` matches prompt, negative prompt, task id or seed, case-insensitively."""
        self.refresh()
        found: list[TaskEntry] = []
        needle = (text or "").lower()
        for entry in reversed(list(self.tasks.values())):
            if needle:
                req = entry.request or {}
                hay = " ".join(str(req.get(k) or "") for k in ("prompt", "negative_prompt", "seed")) + entry.task_id
                if needle not in hay.lower():
                    continue
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
        return found

    def iter_events(self) -> Iterator[dict]:
        """Every readable event in file order (for export); unreadable lines are skipped."""
        if not self.path.exists():  # nothing recorded yet
            return
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    ev = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(ev, dict):
                    yield ev

    # -- paths ----------------------------------------------------------------------------------
    def relative(self, path: str | os.PathLike) -> str:
        """Image paths are stored relative to the `.imagen4/` folder, so a moved project still works."""
        try:
            return os.path.relpath(Path(path).resolve(), self.folder.resolve())
        except ValueError:
            return str(path)

    def resolve(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.folder / path

    @staticmethod
    def content_addressed(image: dict) -> bool:
        """True if a recorded image names a file the image store wrote: `<its sha256>.<png|jpg|webp>`.

        Only such files are read back, so a hostile history line cannot make a reused cell embed, say,
        ~/.ssh/id_rsa as an "image".
        """
        try:
            name, sha = Path(image["path"]).name, image["sha256"]
        except (KeyError, TypeError):
            return False
        return isinstance(sha, str) and store_digest(name) == sha

    def stored_images(self, entry: TaskEntry) -> list[StoredImage]:
        """The entry's images that are content-addressed files (others are left out, see content_addressed)."""
        out = []
        for d in entry.images:
            if not self.content_addressed(d):
                continue
            im = StoredImage.from_dict(d)
            im.path = self.resolve(d["path"])
            out.append(im)
        return out
