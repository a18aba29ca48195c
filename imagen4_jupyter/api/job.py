r"""One request's life: its stages and the transitions allowed between them (written down once, here), the
`Ledger` that is the one writer of that life, and `Job`, the read-only handle that every front-end reads.

A request gets its identity when it is asked for (`Job.local_id`); the task id is attached once, when the service
answers. Its life, in order:

    asked -> queued -> sending -> created -> waiting -> generating -> succeeded | failed
                 \-> cancelled    \-> queued (a 429: nothing created, it waits again)
                                  \-> not_sent | outcome_unknown
    asked -> reused (a stored result shown instead; nothing sent)

Final stages: succeeded, failed, not_sent, outcome_unknown, cancelled, reused. The service's own states map
onto `waiting` (its `waiting` and `queuing`) and `generating` (its `generating`, and `success` until the images
are stored). Views that name fewer or older states read `Job.status` (`pacing`, `sending`, `submitted`,
`waiting`, `queuing`, `generating`, `success`, `fail`, `error`), derived here from the stage and the last record
by one mapping (`status_of`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from concurrent import futures
from typing import Any, Literal, cast, get_args

from .errors import Imagen4Error, Imagen4TimeoutError
from .request import GenerationRequest
from .store import StoredImage
from .task import Result, State, TaskRecord

log = logging.getLogger("imagen4_jupyter")

Stage = Literal["asked", "queued", "sending", "created", "waiting", "generating", "succeeded", "failed",
                "not_sent", "outcome_unknown", "cancelled", "reused"]
STAGES: tuple[Stage, ...] = get_args(Stage)
FINAL_STAGES: tuple[Stage, ...] = ("succeeded", "failed", "not_sent", "outcome_unknown", "cancelled", "reused")
RUNNING: tuple[Stage, ...] = ("created", "waiting", "generating")  # the task exists and is not finished
NEXT: dict[Stage, tuple[Stage, ...]] = {  # the allowed transitions; anything else is refused (and logged)
    "asked": ("queued", "created", "reused", "succeeded", "failed", "not_sent", "outcome_unknown"),  # created: a
    # task followed by its id; succeeded/failed: rebuilt from the history; outcome_unknown: a dead kernel's request
    "queued": ("sending", "cancelled", "not_sent"),
    "sending": ("queued", "created", "outcome_unknown", "not_sent"),
    "created": ("waiting", "generating", "succeeded", "failed"),
    "waiting": ("waiting", "generating", "succeeded", "failed"),
    "generating": ("waiting", "generating", "succeeded", "failed"),
    **{stage: () for stage in FINAL_STAGES},
}


def stage_of(service_state: str) -> Stage:
    """The stage a recordInfo state puts a created task in (`success`: still generating until the images are
    stored; `fail`: the poller ends the job as failed)."""
    return "waiting" if service_state in ("waiting", "queuing") else "generating"


def status_of(stage: Stage, record: TaskRecord | None) -> State:
    """The one mapping from a stage (and the service's last record) to the older, finer status names that cards,
    tables and the panel show."""
    said = record.state if record is not None else None
    if stage in ("asked", "queued"):
        return "pacing"
    if stage == "sending":
        return "sending"
    if stage == "created":
        return "submitted"
    if stage == "waiting":
        return "queuing" if said == "queuing" else "waiting"
    if stage == "generating":
        return "success" if said == "success" else "generating"
    if stage in ("succeeded", "reused"):
        return "success"
    if stage == "failed" and said == "fail":
        return "fail"
    return "error"


class Ledger:
    """The one writer of jobs' lives. `move` checks a transition against `NEXT`, writes it (`write`: nothing here,
    the history for a session's `records.ledger.HistoryLedger`), applies it to the job, and lets the job's
    listeners hear it; a final move completes the job's future last. A move whose record is required ahead
    (`ahead=True`: a request is accepted or sent only once it is on disk) raises the write's OSError and changes
    nothing; any other write failure is left to `unwritten` (the job's life goes on)."""

    def write(self, job: Job, stage: Stage, facts: dict[str, Any]) -> None:
        """Record one move before it is applied (a bare client keeps no record)."""

    def applied(self, job: Job, stage: Stage) -> None:
        """Hear a move once it is applied, before the job's own listeners (a session registers its jobs here)."""

    def unwritten(self, job: Job, stage: Stage, err: OSError) -> None:
        """A move that could not be recorded but is applied all the same (the task exists: never dropped)."""
        log.warning("imagen4: the %s step of %s could not be recorded (%s)", stage, job.task_id or job.local_id, err)

    def move(self, job: Job, stage: Stage, *, ahead: bool = False, **facts: Any) -> bool:
        """Move `job` to `stage` with `facts` (task_id, record, images, error, cost, extra_urls, finished_at).
        False (nothing changes) if the job's life does not allow it, e.g. a late answer for a job already
        ended."""
        with job._moving:  # one move at a time per job: checked, written and applied together
            if stage not in NEXT[job.stage]:
                if job.stage not in FINAL_STAGES:  # a final job ignores late news quietly; anything else is a bug
                    log.warning("imagen4: %s cannot go from %s to %s", job.task_id or job.local_id, job.stage,
                                stage)
                return False
            quiet = stage == job.stage and stage not in FINAL_STAGES and status_of(
                stage, facts.get("record") or job.record) == job.status  # a check that changed nothing: not written
            try:
                if not quiet:
                    self.write(job, stage, facts)
            except OSError as err:
                if ahead:
                    raise
                self.unwritten(job, stage, err)
            job._advance(self, stage, facts)
            return True

    def price(self, job: Job, cost: tuple[float, bool] | None) -> None:
        """Set what the task cost ((credits, measured)); a measured price may replace the estimate any time."""
        job._priced(cost)


class Job(futures.Future[Result]):
    """The read-only handle of one request's life: a `concurrent.futures.Future` of its `Result`. Thread-safe; only
    its `Ledger` moves it (the sender, the poller and the session call the ledger, never the job).

    As a Future: `done()`, `result(timeout)`, `exception(timeout)`, `add_done_callback(fn)`,
    `concurrent.futures.wait(jobs)` / `as_completed(jobs)`, and `await job` (so `asyncio.gather(*jobs)`).
    The future completes only after its ledger wrote the final move and the job's change callbacks (`on_change`:
    the cell's display) ran for the final state; `finished` is already true while they run.
    `cancel()` returns False: the service cannot cancel a task.

    Attributes: `stage` (a `Stage`), `status` (the older `State` names, derived), `local_id` (the request's
    identity from the moment it is asked for), `task_id` (attached once, when the service answers), `record`
    (the last TaskRecord), `images`, `error`, `reused` (shown from the history, no request sent), `checks`
    (status checks made), `first_generating_at` (local time generation was first seen), `generating_since_ms`
    (server time generation started, from the record's `updateTime`; set by the learning schedule),
    `clock_offset` (seconds to add to a server time to get local time), `created_at`, `tracked_at` (the
    overall timeout counts from here), `finished_at`, `extra_urls` (result URLs beyond the `num_images` asked
    for: noted, never downloaded), `cost` ((credits, measured) when a session priced the task: measured from
    the balance, else an estimate; None for a bare client).
    """

    def __init__(self, task_id: str | None, request: GenerationRequest | None, *, created_at: float | None = None,
                 local_id: str | None = None, ledger: Ledger | None = None, stage: Stage | None = None):
        super().__init__()
        self.set_running_or_notify_cancel()  # running until it settles
        self.ledger = ledger or Ledger()  # the one writer of this job's life
        self.local_id = local_id  # the request's identity (None for a task followed by its id alone)
        self.request = request
        self.created_at = created_at if created_at is not None else time.time()
        self.tracked_at = time.time()
        self.send_at: float | None = None  # when a queued request's slot under the create limit is due (a hint)
        self.checks = 0  # status checks made (the poller's count)
        self.first_generating_at: float | None = None
        self.generating_since_ms: int | None = None  # the learning schedule's estimates
        self.clock_offset = 0.0
        self._stage: Stage = stage or ("asked" if task_id is None else "created")  # asked: by local id alone
        self._task_id = task_id
        self._record: TaskRecord | None = None
        self._images: list[StoredImage] = []
        self._extra_urls: list[str] = []
        self._cost: tuple[float, bool] | None = None
        self._error: Imagen4Error | None = None
        self._finished_at: float | None = None
        self._job_lock = threading.Lock()  # not `_condition`: that one is the Future's
        self._moving = threading.RLock()  # held by `Ledger.move` (a listener may move the job again)
        self._change_callbacks: list[Callable[[Job], None]] = []

    # -- the life, read-only ----------------------------------------------------------------------
    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def status(self) -> State:
        return status_of(self._stage, self._record)

    @property
    def task_id(self) -> str | None:
        """The service's id, attached once when createTask answers (None before, and for a request that ended
        without a task)."""
        return self._task_id

    @property
    def record(self) -> TaskRecord | None:
        return self._record

    @property
    def images(self) -> list[StoredImage]:
        return self._images

    @property
    def extra_urls(self) -> list[str]:
        return self._extra_urls

    @property
    def error(self) -> Imagen4Error | None:
        return self._error

    @property
    def cost(self) -> tuple[float, bool] | None:
        return self._cost

    @property
    def reused(self) -> bool:
        return self._stage == "reused"

    @property
    def finished_at(self) -> float | None:
        return self._finished_at

    # -- reading ------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once the life has reached a final stage (images stored, or the error set). Already true while
        the change callbacks run for the final stage; `done()` becomes true only after they ran."""
        return self._finished_at is not None

    @property
    def elapsed(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.created_at)

    def exception(self, timeout: float | None = None) -> Imagen4Error | None:
        """Block until done; return the job's error (None if it succeeded). Raises `Imagen4TimeoutError` if it
        is not done within `timeout` seconds."""
        try:
            return cast("Imagen4Error | None", super().exception(timeout))  # a ledger sets only Imagen4Errors
        except futures.TimeoutError:  # only the wait itself: the job's own error is returned, not raised
            raise Imagen4TimeoutError(f"Still {self.status} after waiting {timeout:g} s; call wait() again later.",
                                      task_id=self.task_id) from None

    def result(self, timeout: float | None = None) -> Result:
        """Block until the task is finished and its images are stored; return the Result or raise its error.
        Raises `Imagen4TimeoutError` (naming the task) if it is not done within `timeout` seconds."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        return super().result(0)

    def wait(self, timeout: float | None = None) -> Result:
        """The same as `result(timeout)`."""
        return self.result(timeout)

    def cancel(self) -> bool:
        """Always False: the service cannot cancel a task, so a Job runs until it settles."""
        return False

    def add_done_callback(self, fn: Callable[[Job], Any]) -> None:
        """Call `fn(job)` once the job is done (at once if it is): from the poller thread, after the history's
        final event and the display update. An exception in `fn` is logged, never raised."""
        def safe(job: futures.Future) -> None:
            try:
                fn(self)
            except Exception:
                log.exception("done callback failed for task %s", self.task_id)

        super().add_done_callback(safe)

    def on_change(self, fn: Callable[[Job], Any]) -> None:
        """Call `fn(job)` from the poller thread on every status change and once for the final state (then
        `finished` is true and `done()` still false). An exception in `fn` is logged, never raised."""
        with self._job_lock:
            self._change_callbacks.append(fn)

    def __await__(self) -> Generator[Any, None, Result]:
        """`await job` returns the Result (or raises its error), without blocking the event loop."""
        import asyncio  # ~10 ms, and already loaded wherever there is an event loop

        return asyncio.wrap_future(self).__await__()

    # -- the ledger's side ----------------------------------------------------------------------------
    def _advance(self, ledger: Ledger, stage: Stage, facts: dict[str, Any]) -> None:
        """Apply one move (called by `Ledger.move` only): the new stage and facts, then the ledger's `applied`
        and the change callbacks; a final stage then completes the future, so waiters see the move written."""
        with self._job_lock:
            before = (self._stage, self.status)
            self._stage = stage
            if (task_id := facts.get("task_id")) is not None and self._task_id is None:
                self._task_id = task_id
                self.created_at = self.tracked_at = time.time()
            if (record := facts.get("record")) is not None:
                self._record = record
            if "cost" in facts:
                self._cost = facts["cost"]
            if (error := facts.get("error")) is not None:
                self._error = error
            if facts.get("images") is not None:
                self._images = list(facts["images"])
            if facts.get("extra_urls"):
                self._extra_urls = list(facts["extra_urls"])
            if stage == "generating" and self.first_generating_at is None and self.status == "generating":
                self.first_generating_at = time.time()
            final = stage in FINAL_STAGES
            if final:
                self._finished_at = facts.get("finished_at") or time.time()
            changed = final or (self._stage, self.status) != before
            callbacks = list(self._change_callbacks) if changed else []
        if changed:
            try:
                ledger.applied(self, stage)
            except Exception:
                log.exception("ledger listener failed for %s", self._task_id or self.local_id)
        self._fire(callbacks)
        if not final:
            return
        if self._error is not None:
            super().set_exception(self._error)
        else:
            urls = self._record.result_urls if self._record else [im.url or "" for im in self._images]
            super().set_result(Result(task_id=self._task_id or "", request=self.request, state="success",
                                      result_urls=urls, images=self._images, record=self._record,
                                      reused=self.reused))

    def _priced(self, cost: tuple[float, bool] | None) -> None:
        with self._job_lock:
            self._cost = cost

    def _fire(self, callbacks: list[Callable[[Job], Any]]) -> None:
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # a display callback must never kill the poller
                log.exception("callback failed for task %s", self._task_id)

    # -- display ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        prompt = (self.request.prompt[:40] + "…") if self.request and len(self.request.prompt) > 40 else (
            self.request.prompt if self.request else "")
        return f"<Job {self.task_id} {self.status} {self.elapsed:.1f}s {prompt!r}>"

    def _repr_html_(self) -> str:
        from .cards import job_html

        return job_html(self)

