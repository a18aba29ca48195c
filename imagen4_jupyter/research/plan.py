"""Resuming a batch: what its earlier runs left in the history, and so what to do with each item now.

An item is reused (its stored result is shown, no request), followed (its task exists and is unfinished, or its
images are gone from disk: the session resumes it, no new task), lost (an earlier createTask got no answer, or a
killed kernel was sending it: its `sending` event has no end, records/sendlog.py; never resent) or created
(a request a dead kernel queued but never sent is created once, under its own local id). `batch.py` asks
`resolve(item)` once per item, just before dispatching it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..records.lease import owner_state

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
        self.claimed_locals: set[str] = set()  # local ids of waiting requests given to an item already

    def _index_of(self, ev: dict) -> int | None:
        """The item an event is about, by the batch tag the runner puts in its events (`extra`), or None."""
        tag = ev.get("batch")
        if not isinstance(tag, dict) or tag.get("id") != self.bid or not isinstance(tag.get("index"), int):
            return None
        idx = tag["index"]
        if not 0 <= idx < len(self.items) or ev.get("request_key") != self.items[idx].request.key():
            return None
        return idx

    def _latest_by_index(self, events: list[dict]) -> dict[int, tuple[str, Any]]:
        """The last thing an earlier run did for each item: ("task", task id), ("unknown", event) for an
        `outcome_unknown` or a `sending` with no end after it (the kernel died while sending: it may have
        created a task), or ("queued", event) for a request that waited and was certainly never sent.

        An event is the item's by its batch tag, or by its `local_id` when an earlier event of that request
        carried the tag (what `%imagen4 resume` writes for a dead kernel's request)."""
        latest: dict[int, tuple[str, Any]] = {}
        local_index: dict[str, int] = {}  # local id -> item, from a tagged `queued`/`sending` event
        for ev in events:
            kind, local = ev.get("event"), ev.get("local_id")
            idx = self._index_of(ev)
            if idx is None and isinstance(local, str):
                idx = local_index.get(local)
            if idx is None:
                continue
            if isinstance(local, str) and kind in ("queued", "sending"):
                local_index[local] = idx
                latest[idx] = ("unknown" if kind == "sending" else "queued", {**ev, "local_id": local})
                continue
            if kind == "submitted" and isinstance(ev.get("task_id"), str):
                latest[idx] = ("task", ev["task_id"])
            elif kind == "outcome_unknown":
                latest[idx] = ("unknown", ev)
            elif kind == "not_sent" and latest.get(idx, ("",))[0] in ("unknown", "queued"):
                del latest[idx]  # its request certainly created nothing: created again
        self.claimed_locals.update(local_index)  # never matched again by request key
        return latest

    def read(self) -> None:
        """Read the history (once, when the run starts; nothing to read without a session or with force)."""
        if self.session is None:
            return
        history = self.session.history
        try:
            events = list(history.iter_events())
        except FileNotFoundError:
            events = []
        for idx, (kind, value) in self._latest_by_index(events).items():
            if kind == "unknown":
                self.planned[idx] = (LOST, value)
                continue
            if kind == "queued":  # waited, never sent: sent now under its own local id (which ends its record)
                self._plan_queued(idx, value)
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
        self._match_waiting_by_key(history.waiting())
        for entry in history.unfinished():  # another run's unfinished task with the same request
            if entry.task_id not in self.claimed and entry.request_key:
                self.unfinished_by_key.setdefault(entry.request_key, []).append(entry)

    def _plan_queued(self, idx: int, event: dict) -> None:
        """A request of this item that waited in a send queue and was never sent: sent once, by this run, under
        its local id, unless this kernel still holds it or its kernel's lease has not lapsed (records/lease.py:
        that kernel may still send it; in doubt it is not sent)."""
        local = event.get("local_id")
        assert isinstance(local, str)  # a queued request is named by its local id (both callers checked it)
        assert self.session is not None
        if local in self.session.queued or owner_state(event, self.session.history.folder) != "lapsed":
            self.planned[idx] = (LOST, {**event, "alive": True})
        else:
            self.planned[idx] = (CREATE, local)
        self.claimed_locals.add(local)

    def _match_waiting_by_key(self, waiting: list[dict]) -> None:
        """Requests with the same request key that a kernel left without an end and that carry no tag of this
        batch (a cell's, another batch's): a `sending` one may have created the task, so one item with that key
        is not sent again (outcome unknown); a `queued` one that no live kernel holds is sent once by this run."""
        open_items: dict[str, list[int]] = {}
        for item in self.items:
            if item.index not in self.planned:
                open_items.setdefault(item.request.key(), []).append(item.index)
        for event in waiting:
            local = event.get("local_id")
            key = event.get("request_key")
            if not isinstance(local, str) or not isinstance(key, str) or local in self.claimed_locals \
                    or not open_items.get(key):
                continue
            idx = open_items[key].pop(0)
            if event.get("sending"):
                self.planned[idx] = (LOST, event)
                self.claimed_locals.add(local)
            else:
                self._plan_queued(idx, event)

    def resolve(self, item: BatchItem) -> tuple[str, Any]:
        """What to do with an item: (REUSE, entry) / (FOLLOW, entry) / (LOST, event) / (CREATE, local id or
        None): the local id of a request a dead kernel queued and never sent, sent now under that name so the
        history ends its record (resume then sends it no more). Following claims the task: ask once per item."""
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
