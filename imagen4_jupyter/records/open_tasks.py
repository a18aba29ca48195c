"""The `%load_ext` notice "N unfinished task(s)" from a small read, not a parse of the whole history.

A sidecar `<history>.open` (JSON: the log size it covers, the log's first bytes, the open task ids) is read,
and only the log's bytes appended since are folded: a `submitted` event with its request opens a task, a
`succeeded` one or a final `failed` one closes it (what `History.unfinished` counts). Without a matching
sidecar the log is scanned once and the sidecar written (best effort: a read-only folder just scans again).
The history itself (records/history.py) is parsed on first use, not at load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

HEAD = 256  # bytes of the log's start kept in the sidecar: a replaced log does not match


def sidecar(log: Path) -> Path:
    return log.with_name(log.name + ".open")


def open_task_ids(log: str | os.PathLike) -> list[str]:
    """The ids of tasks created but not finished for good, in the order they were created."""
    log = Path(log)
    try:
        size = log.stat().st_size
    except OSError:
        return []
    if size == 0:
        return []
    with open(log, "rb") as fh:
        head = fh.read(HEAD)
        start, ids = 0, {}
        try:
            state = json.loads(sidecar(log).read_text(encoding="utf-8"))
            if state["head"] == head.hex() and 0 < state["size"] <= size:
                start, ids = int(state["size"]), dict.fromkeys(state["open"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if start == size:
            return list(ids)
        fh.seek(start)
        chunk = fh.read(size - start)
    end = chunk.rfind(b"\n") + 1  # an unfinished last line waits for the next read
    for raw in chunk[:end].split(b"\n"):
        _fold(raw, ids)
    try:
        sidecar(log).write_text(json.dumps({"size": start + end, "head": head.hex(), "open": list(ids)}),
                                encoding="utf-8")
    except OSError:
        pass
    return list(ids)


def _fold(raw: bytes, ids: dict[str, None]) -> None:
    if not raw.strip() or (b'"submitted"' not in raw and b'"succeeded"' not in raw and b'"failed"' not in raw):
        return
    try:
        ev = json.loads(raw)
        kind, task_id = ev.get("event"), ev.get("task_id")
    except (ValueError, AttributeError):
        return
    if not isinstance(task_id, str):
        return
    if kind == "submitted" and isinstance(ev.get("request"), dict):
        ids.setdefault(task_id)
    elif kind == "succeeded" or (kind == "failed" and ev.get("final")):
        ids.pop(task_id, None)
