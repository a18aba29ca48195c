"""Resuming a batch: what its earlier runs left in the history, and so what to do with each item now.

An item is reused (its stored result is shown, no request), followed (its task exists and is unfinished, or its
images are gone from disk: the session resumes it, no new task), lost (an earlier createTask got no answer: never
resent) or created. `batch.py` asks `resolve(item)` once per item, just before dispatching it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..records.history import TaskEntry
    from ..records.session import Session
    from .results import BatchItem

REUSE, FOLLOW, LOST, CREATE = "reuse", "follow", "lost", "create"


class ResumePlan:
    """The history's answer for the items of batch `bid` (nothing to find without a session or with force)."""

    def __init__(self, items: list[BatchItem], *, session: Session | None, bid: str, force: bool = False,
                 reuse: str | None = None):
        self.items = items
        self.session = None if force else session
        self.bid = bid
        self.reuse = reuse
        self.planned: dict[int, tuple[str, Any]] = {}
        self.claimed: set[str] = set()  # task ids given to an item already
        self.unfinished_by_key: dict[str, list[TaskEntry]] = {}

    def _latest_by_index(self) -> dict[int, tuple[str, Any]]:
        """The last thing an earlier run did for each item: ("task", task id) or ("unknown", event)."""
        assert self.session is not None
        latest: dict[int, tuple[str, Any]] = {}
        try:
            events = list(self.session.history.iter_events())
        except FileNotFoundError:
            events = []
        for ev in events:
            tag = ev.get("batch")
            if not isinstance(tag, dict) or tag.get("id") != self.bid or not isinstance(tag.get("index"), int):
                continue
            idx = tag["index"]
            if not 0 <= idx < len(self.items) or ev.get("request_key") != self.items[idx].request.key():
                continue
            if ev.get("event") == "submitted" and isinstance(ev.get("task_id"), str):
                latest[idx] = ("task", ev["task_id"])
            elif ev.get("event") == "outcome_unknown":
                latest[idx] = ("unknown", ev)
        return latest

    def read(self) -> None:
        """Read the history (once, when the run starts; nothing to read without a session or with force)."""
        if self.session is None:
            return
        history = self.session.history
        for idx, (kind, value) in self._latest_by_index().items():
            if kind == "unknown":
                self.planned[idx] = (LOST, value)
                continue
            entry = history.get(value)
            if entry is None:
                continue
            self.claimed.add(entry.task_id)
            if entry.state == "success":
                # images gone from disk (or not store files): follow the task again, which downloads them
                # (no new task)
                self.planned[idx] = (REUSE, entry) if history.images_on_disk(entry) else (FOLLOW, entry)
            elif not entry.finished:
                self.planned[idx] = (FOLLOW, entry)
            # failed for good: created again
        for entry in history.unfinished():  # another run's unfinished task with the same request
            if entry.task_id not in self.claimed and entry.request_key:
                self.unfinished_by_key.setdefault(entry.request_key, []).append(entry)

    def resolve(self, item: BatchItem) -> tuple[str, Any]:
        """What to do with an item: (REUSE, entry) / (FOLLOW, entry) / (LOST, event) / (CREATE, None).
        Following claims the task: ask once per item."""
        if self.session is None:
            return CREATE, None
        planned = self.planned.get(item.index)
        if planned is not None:
            return planned
        entry = self.session.find_reusable(item.request, self.reuse)
        if entry is not None:
            return REUSE, entry
        for entry in self.unfinished_by_key.get(item.request.key(), []):
            if entry.task_id not in self.claimed:
                self.claimed.add(entry.task_id)
                return FOLLOW, entry
        return CREATE, None

    def preview(self) -> dict[int, str]:
        """What `resolve` would answer for every item now (REUSE, FOLLOW, LOST or CREATE), by index, without
        claiming any task: for a batch's plan before (or instead of) running it. `read()` first."""
        claimed = set(self.claimed)
        try:
            return {item.index: self.resolve(item)[0] for item in self.items}
        finally:
            self.claimed = claimed
