"""Reuse across a `.imagen4/` folder: a request that succeeded in any notebook's history there is not paid again.

A duplicated notebook (File > Save As, JupyterLab's "Copy1") gets its own history, so its seeded cells would find
nothing in it. `FolderHistories.find_reusable` looks in the folder's other `*.jsonl` histories; the session then
records the reuse in the notebook's own history (`record_reuse`: one `reused` event with the task id, the request,
the images and the history it came from), which then reads complete on its own. Images are content-addressed in
the shared `images/`, so nothing is copied.

Speed, at 20 histories of 10,000 tasks: another history is first read only for the request keys of its succeeded
tasks (`_Keys`: a regular-expression scan of the new bytes, never a JSON parse of every line), cached in memory by
(size, mtime) and on disk in `<name>.jsonl.keys` (plain JSON, a cache like `.index`: used only while it matches
the log's bytes, deleted at will). Only a hit loads that history in full (`History`, with its own index) to check
the entry and that its image files are still on disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from dataclasses import replace
from pathlib import Path

from ..api.request import GenerationRequest
from ..api.store import write_atomic
from .history import History, TaskEntry

KEYS_FORMAT = 2
KEY_WIDTH = 32  # a request key: 32 hex digits (GenerationRequest.key)
SAVE_EVERY = 64 * 1024  # bytes of log scanned between writes of the `.keys` cache
CHECK_BYTES = 4096  # the log's first bytes and the bytes before the offset, hashed, tie the cache to the log

# One event per line; JSON escapes every quote inside a string, so these only match the top-level fields.
_LINE = re.compile(rb'^[^\n]*"event":"(submitted|succeeded|reused)"[^\n]*', re.M)
_TASK = re.compile(rb'"task_id":"([^"\\]+)"')
_KEY = re.compile(rb'"request_key":"([0-9a-f]+)"')
_SIMULATED = b'"simulated":true'


def origin_label(name: str) -> str:
    """How a history file is named in messages: `quickstart.jsonl` -> "quickstart.ipynb's history"."""
    stem = name[:-len(".jsonl")] if name.endswith(".jsonl") else name
    return "the working directory's history (history.jsonl)" if stem == "history" else f"{stem}.ipynb's history"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _packed_has(packed: str, key: str) -> bool:
    """Binary search in `packed`: sorted keys of KEY_WIDTH characters each, concatenated."""
    lo, hi = 0, len(packed) // KEY_WIDTH
    while lo < hi:
        mid = (lo + hi) // 2
        probe = packed[mid * KEY_WIDTH:(mid + 1) * KEY_WIDTH]
        if probe == key:
            return True
        lo, hi = (mid + 1, hi) if probe < key else (lo, mid)
    return False


class _Keys:
    """The request keys of one history's succeeded tasks, kept current by scanning only the bytes appended.

    On disk and after loading, the keys are one sorted string (binary search, nothing built per key), so a fresh
    kernel reads 20 caches of 10,000 keys in milliseconds; keys found since are in a small set."""

    def __init__(self, path: Path):
        self.path = path
        self.cache_path = path.with_name(path.name + ".keys")
        self.history: History | None = None  # loaded in full on the first hit only
        self._reset()

    def _reset(self) -> None:
        self.stamp: tuple[int, int] | None = None
        self.offset = self.saved = 0
        self.packed = ""  # sorted request keys of succeeded tasks (KEY_WIDTH characters each), from the cache
        self.added: set[str] = set()  # keys of succeeded tasks found since (and any of another width)
        self.pending: dict[str, str] = {}  # task id -> request key: submitted, not yet succeeded
        self.simulated_packed = ""  # task ids made by the in-kernel simulator, newline-separated, from the cache
        self.simulated_added: set[str] = set()
        self._simulated: set[str] | None = None
        self.tried_cache = False

    def has(self, key: str) -> bool:
        return key in self.added or (len(key) == KEY_WIDTH and _packed_has(self.packed, key))

    def is_simulated(self, task_id: str) -> bool:
        if task_id in self.simulated_added:
            return True
        if self._simulated is None:
            self._simulated = set(self.simulated_packed.split("\n")) - {""}
        return task_id in self._simulated

    def update(self, stamp: tuple[int, int]) -> None:
        if stamp == self.stamp:
            return
        size = stamp[0]
        if size < self.offset:  # replaced: start over
            self._reset()
        if self.offset == 0 and not self.tried_cache:
            self.tried_cache = True
            self._load(size)
        if size > self.offset:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(size - self.offset)
            end = chunk.rfind(b"\n") + 1  # an incomplete last line waits for its end
            self._scan(chunk[:end])
            self.offset += end
        self.stamp = stamp
        if self.offset - self.saved >= SAVE_EVERY:
            self._save()

    def _scan(self, data: bytes) -> None:
        for match in _LINE.finditer(data):
            line, kind = match.group(0), match.group(1)
            task = _TASK.search(line)
            if task is None:
                continue
            tid = task.group(1).decode("utf-8", "replace")
            if _SIMULATED in line and kind != b"succeeded":
                self.simulated_added.add(tid)
            if kind == b"succeeded":
                key = self.pending.pop(tid, None)
            else:
                found = _KEY.search(line)
                key = found.group(1).decode() if found else None
                if kind == b"submitted":
                    if key:
                        self.pending[tid] = key
                    continue
            if key:
                self.added.add(key)

    def _checks(self, offset: int) -> tuple[str, str]:
        with open(self.path, "rb") as fh:
            head = fh.read(min(CHECK_BYTES, offset))
            fh.seek(max(0, offset - CHECK_BYTES))
            tail = fh.read(offset - max(0, offset - CHECK_BYTES))
        return _digest(head), _digest(tail)

    def _load(self, size: int) -> None:
        try:
            state = json.loads(self.cache_path.read_bytes())
            offset = state["offset"]
            if state["format"] != KEYS_FORMAT or not (isinstance(offset, int) and 0 < offset <= size):
                return
            if list(self._checks(offset)) != [state["head"], state["tail"]]:
                return
            packed, other, pending, simulated = state["keys"], state["other"], state["pending"], state["simulated"]
            if not (isinstance(packed, str) and len(packed) % KEY_WIDTH == 0 and isinstance(other, list)
                    and isinstance(pending, dict) and isinstance(simulated, str)):
                return
        except (OSError, ValueError, KeyError, TypeError):  # missing, damaged or stale: scan the log instead
            return
        self.packed, self.added, self.pending, self.simulated_packed = packed, set(other), pending, simulated
        self.offset = self.saved = offset

    def _save(self) -> None:
        keys = {self.packed[i:i + KEY_WIDTH] for i in range(0, len(self.packed), KEY_WIDTH)} | self.added
        packed = "".join(sorted(k for k in keys if len(k) == KEY_WIDTH))
        simulated = "\n".join(sorted(self.simulated_added | set(self.simulated_packed.split("\n")) - {""}))
        try:
            head, tail = self._checks(self.offset)
            state = {"format": KEYS_FORMAT, "offset": self.offset, "head": head, "tail": tail, "keys": packed,
                     "other": sorted(k for k in keys if len(k) != KEY_WIDTH), "pending": self.pending,
                     "simulated": simulated}
            write_atomic(self.cache_path, json.dumps(state, separators=(",", ":")).encode())
        except OSError:
            return  # a read-only folder: scanned again next time
        self.packed, self.simulated_packed, self._simulated = packed, simulated, None
        self.added = {k for k in keys if len(k) != KEY_WIDTH}
        self.simulated_added = set()
        self.saved = self.offset

    def find(self, key: str, simulated: bool | None) -> TaskEntry | None:
        """The newest succeeded task of this history with request key `key` whose files are all on disk."""
        if not self.has(key):
            return None
        if self.history is None:
            self.history = History(self.path)
        hist = self.history
        hist.refresh()
        for tid in reversed(hist.by_key.get(key, [])):
            entry = hist.tasks[tid]
            if (simulated is None or self.is_simulated(tid) == simulated) and hist.images_on_disk(entry):
                return entry
        return None


class FolderHistories:
    """The histories of one `.imagen4/` folder, for reuse across its notebooks. Thread-safe."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._keys: dict[str, _Keys] = {}
        self._lock = threading.Lock()

    def others(self, own: str | os.PathLike | None = None) -> list[tuple[Path, tuple[int, int]]]:
        """The folder's `*.jsonl` histories except `own`, newest first, with their (size, mtime)."""
        own_name = Path(own).name if own is not None else None
        found = []
        try:
            with os.scandir(self.folder) as it:
                for item in it:
                    if item.name.endswith(".jsonl") and item.name != own_name and item.is_file():
                        st = item.stat()
                        found.append((Path(item.path), (st.st_size, st.st_mtime_ns)))
        except OSError:
            return []
        return sorted(found, key=lambda pair: pair[1][1], reverse=True)

    def find_reusable(self, request: GenerationRequest, *, own: str | os.PathLike | None = None,
                      simulated: bool | None = None) -> TaskEntry | None:
        """A succeeded task with exactly this request in another history of the folder (newest history first)
        whose image files are all on disk, as a copy whose `origin` names that history's file; else None.
        `simulated`: only tasks made (True) or not made (False) by the in-kernel simulator."""
        key = request.key()
        with self._lock:
            for path, stamp in self.others(own):
                keys = self._keys.get(path.name)
                if keys is None:
                    keys = self._keys[path.name] = _Keys(path)
                try:
                    keys.update(stamp)
                    entry = keys.find(key, simulated)
                except OSError:  # removed or unreadable meanwhile: look at the next one
                    continue
                if entry is not None:
                    return replace(entry, origin=path.name, images=[dict(im) for im in entry.images],
                                   urls=list(entry.urls))
        return None

    def is_simulated(self, origin: str, task_id: str) -> bool:
        """True if `task_id` of the history file `origin` was made by the in-kernel simulator."""
        keys = self._keys.get(origin)
        return keys is not None and keys.is_simulated(task_id)


_folders: dict[Path, FolderHistories] = {}
_folders_lock = threading.Lock()


def folder_histories(folder: str | os.PathLike) -> FolderHistories:
    """The process's one `FolderHistories` of `folder` (its caches are shared by every session)."""
    path = Path(folder).absolute()
    with _folders_lock:
        found = _folders.get(path)
        if found is None:
            found = _folders[path] = FolderHistories(path)
        return found


def record_reuse(history: History, entry: TaskEntry) -> tuple[TaskEntry, bool]:
    """Record in `history` that `entry`'s stored result was shown instead of creating a task, so the notebook's
    spend counts what reuse saved (`records/spend.py`), whichever history the result came from.

    A task of another history (a copy from `FolderHistories.find_reusable`, its `origin` set) is written once as
    a `reused` event: the task id, the request, the images and where it came from, so the history lists it,
    exports it and reuses it again on its own. A task the history already knows (its own, or copied before) gets
    a small `reuse` event each time it is shown again (task id, request key, number of images: nothing copied).
    Returns `history`'s entry for the task (`entry` if the history cannot be written: a warning says so) and
    whether the in-kernel simulator made it."""
    own = history.get(entry.task_id)
    if own is not None or not entry.origin:
        _append_or_warn(history, {"event": "reuse", "task_id": entry.task_id, "request_key": entry.request_key,
                                  "images": len(entry.images)}, entry.task_id)
        return own or entry, False
    simulated = folder_histories(history.folder).is_simulated(entry.origin, entry.task_id)
    event = {"event": "reused", "task_id": entry.task_id, "from": entry.origin, "request": entry.request,
             "request_key": entry.request_key, "images": entry.images, "urls": entry.urls,
             "submitted_at": entry.submitted_at, "finished_at": entry.finished_at, "cost_time_ms": entry.cost_time_ms,
             "source": entry.source, **({"simulated": True} if simulated else {})}
    if not _append_or_warn(history, event, entry.task_id):
        return entry, simulated
    return history.tasks[entry.task_id], simulated


def _append_or_warn(history: History, event: dict, task_id: str) -> bool:
    try:
        history.append(event)
    except OSError as err:  # the images are shown anyway; only this history's record of the reuse is missing
        warnings.warn(f"imagen4: the history {history.path} could not be written ({type(err).__name__}: "
                      f"{err.strerror or err}). The reuse of task {task_id} is not recorded there.",
                      RuntimeWarning, stacklevel=4)
        return False
    return True
