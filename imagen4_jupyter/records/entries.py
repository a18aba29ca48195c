"""What the history knows about one task (`TaskEntry`, folded from its events), and the finished Job rebuilt
from it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

from ..api import errors as E
from ..api.job import Job, Ledger, Stage
from ..api.request import GenerationRequest
from ..api.store import StoredImage
from ..api.task import TaskRecord

ENTRY_STAGES: dict[str, Stage] = {  # a history entry's `state` (the service's words, the fold's) -> its stage
    "submitted": "created", "waiting": "waiting", "queuing": "waiting", "generating": "generating",
    "downloading": "generating", "success": "succeeded", "fail": "failed", "error": "failed",
    "outcome unknown": "outcome_unknown"}


@dataclass
class TaskEntry:
    """Everything the history knows about one task, folded from its events."""

    task_id: str
    request: dict | None = None
    request_key: str | None = None
    submitted_at: float | None = None
    cell: Any = None
    source: str | None = None
    state: str = "submitted"
    urls: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    error: dict | None = None
    cost_time_ms: int | None = None
    generating_since_ms: int | None = None  # server time when generation started (learned polling)
    complete_time_ms: int | None = None
    finished_at: float | None = None
    credits_before: float | None = None
    credits_after: float | None = None
    credits: float | None = None  # what the task cost: measured (a balance delta) or estimated
    credits_measured: bool = False
    succeeded: bool = False  # only a `succeeded` event (images stored) makes a task done; `state: success` does not
    origin: str | None = None  # reused from another history of the folder: that file's name (`reused`, folder.py)
    local_id: str | None = None  # the request's local id while it was queued (names its card's display id)

    @property
    def stage(self) -> Stage:
        """The task's place in a request's life (`api/job.py`), from the history's words by one mapping."""
        if self.succeeded:
            return "succeeded"
        return ENTRY_STAGES.get(self.state, "created")

    @property
    def finished(self) -> bool:
        """Succeeded, or failed for good (timeouts and download/connection problems can be resumed)."""
        return self.succeeded or (self.error is not None and bool(self.error.get("final")))

    def generation_request(self) -> GenerationRequest | None:
        try:
            return GenerationRequest.from_dict(self.request) if self.request else None
        except Exception:
            return None


ENTRY_FIELDS = [f.name for f in fields(TaskEntry)]  # the index snapshot's row layout


def recorded_cost(value: Any) -> tuple[float, bool] | None:
    """(credits, measured) from a recorded cost, `{"credits": 6, "measured": false}` (a `submitted` event's
    `cost`, or a `cost` event itself); None when it holds no number of credits of at least 0."""
    if not isinstance(value, dict):
        return None
    credits = value.get("credits")
    if isinstance(credits, bool) or not isinstance(credits, (int, float)) or not credits >= 0:
        return None
    return float(credits), bool(value.get("measured"))


def entry_cost(entry: TaskEntry) -> tuple[float, bool] | None:
    """(credits, measured) the history recorded for the task, or None (older records, other notebooks')."""
    return None if entry.credits is None else (entry.credits, entry.credits_measured)


def finished_job(entry: TaskEntry, images: list[StoredImage], *, reused: bool = False) -> Job:
    """A finished Job rebuilt from a history entry and its stored images (nothing is sent): `reused` when shown
    in place of a new task (it then costs nothing: the card says 0), else as it ended."""
    job = Job(entry.task_id, entry.generation_request(), created_at=entry.submitted_at or time.time(),
              stage="asked")
    ledger = Ledger()  # nothing to write: the history holds it already
    when: dict[str, Any] = {"finished_at": entry.finished_at} if entry.finished_at else {}  # what it took then
    if entry.state == "success":
        record = TaskRecord(task_id=entry.task_id, state="success", result_urls=list(entry.urls),
                            cost_time_ms=entry.cost_time_ms)
        ledger.move(job, "reused" if reused else "succeeded", record=record, images=images,
                    cost=None if reused else entry_cost(entry), **when)
    elif entry.error is not None:
        error = entry.error
        cls = getattr(E, error.get("kind") or "", E.Imagen4Error)
        if not (isinstance(cls, type) and issubclass(cls, E.Imagen4Error)):
            cls = E.Imagen4Error
        ledger.move(job, "failed", error=cls(error.get("message") or "failed"), cost=entry_cost(entry), **when)
    else:  # not finished: a task still to follow
        ledger.move(job, "created", cost=entry_cost(entry))
    return job
