"""`Job`: the handle of one submitted task, a `concurrent.futures.Future` that the poller completes."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from concurrent import futures
from typing import Any, cast

from .errors import Imagen4Error, Imagen4TimeoutError
from .request import GenerationRequest
from .store import StoredImage
from .task import Result, State, TaskRecord

log = logging.getLogger("imagen4_jupyter")


class Job(futures.Future[Result]):
    """A submitted task: a `concurrent.futures.Future` of its `Result`. Thread-safe; updated by the poller.

    As a Future: `done()`, `result(timeout)`, `exception(timeout)`, `add_done_callback(fn)`,
    `concurrent.futures.wait(jobs)` / `as_completed(jobs)`, and `await job` (so `asyncio.gather(*jobs)`).
    The future completes only after the job's change callbacks (`on_change`: the history's final event, the
    cell's display) ran for the final state; `finished` is already true while they run.
    `cancel()` returns False: the service cannot cancel a task.

    Attributes: `status` (a `State`), `record` (the last TaskRecord), `images`, `error`, `reused` (rebuilt from
    the history, no request sent), `checks` (status checks made), `first_generating_at` (local time generation
    was first seen), `generating_since_ms` (server time generation started, from the record's `updateTime`;
    set by the learning schedule), `clock_offset` (seconds to add to a server time to get local time),
    `created_at`, `tracked_at` (the overall timeout counts from here), `finished_at`, `extra_urls` (result URLs
    beyond the `num_images` asked for: noted, never downloaded), `cost` ((credits, measured) when a session
    priced the task: measured from the balance or a signed callback, else an estimate; None for a bare client).
    """

    def __init__(self, task_id: str | None, request: GenerationRequest | None, *, created_at: float | None = None):
        super().__init__()
        self.set_running_or_notify_cancel()  # running until it settles
        self.task_id = task_id  # None while the request waits in the local send queue (status "pacing")
        self.local_id: str | None = None  # names a queued request in the history until it has a task id
        self.send_at: float | None = None  # when a queued request's slot under the create limit is due
        self.request = request
        self.created_at = created_at if created_at is not None else time.time()
        self.tracked_at = time.time()
        self.reused = False
        self.status: State = "submitted"
        self.record: TaskRecord | None = None
        self.images: list[StoredImage] = []
        self.extra_urls: list[str] = []
        self.cost: tuple[float, bool] | None = None  # (credits, measured) once a session priced it (records/)
        self.error: Imagen4Error | None = None
        self.checks = 0
        self.first_generating_at: float | None = None
        self.generating_since_ms: int | None = None
        self.clock_offset = 0.0
        self.finished_at: float | None = None
        self._job_lock = threading.Lock()  # not `_condition`: that one is the Future's
        self._change_callbacks: list[Callable[[Job], None]] = []

    # -- reading ------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once the outcome is known (images stored, or the error set). Already true while the change
        callbacks run for the final state; `done()` becomes true only after they ran."""
        return self.finished_at is not None

    @property
    def elapsed(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.created_at)

    def exception(self, timeout: float | None = None) -> Imagen4Error | None:
        """Block until done; return the job's error (None if it succeeded). Raises `Imagen4TimeoutError` if it
        is not done within `timeout` seconds."""
        try:
            return cast("Imagen4Error | None", super().exception(timeout))  # settle() sets only Imagen4Errors
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

    # -- updating (the sender's, the poller's and the session's side) ------------------------------
    def mark_pacing(self) -> None:
        """Waiting to be sent (in the sender's queue, or again after a 429): runs the change callbacks."""
        self._move("pacing")

    def mark_sending(self) -> None:
        """Its createTask is leaving now: runs the change callbacks."""
        self._move("sending")

    def _move(self, status: State) -> None:
        with self._job_lock:
            if self.finished or self.status == status:
                return
            self.status = status
            callbacks = list(self._change_callbacks)
        self._fire(callbacks)

    def assign(self, task_id: str) -> None:
        """A queued request was created: it has its task id now (status `submitted`); runs the change
        callbacks."""
        with self._job_lock:
            self.task_id, self.status = task_id, "submitted"
            self.created_at = self.tracked_at = time.time()
            callbacks = list(self._change_callbacks)
        self._fire(callbacks)

    def update(self, status: State, record: TaskRecord | None = None) -> None:
        """Report a status check: the new state and the record it came from. Runs the change callbacks if the
        state changed. Ignored once the job is finished."""
        with self._job_lock:
            if self.finished:
                return
            changed = status != self.status
            self.status = status
            if record is not None:
                self.record = record
            if status == "generating" and self.first_generating_at is None:
                self.first_generating_at = time.time()
            callbacks = list(self._change_callbacks) if changed else []
        self._fire(callbacks)

    def settle(self, *, images: list[StoredImage] | None = None, error: Imagen4Error | None = None) -> bool:
        """Finish the job with its stored images, or with `error`: runs the change callbacks, then completes the
        future (waiters and done callbacks wake). Returns False (and changes nothing) if already finished."""
        with self._job_lock:
            if self.finished:
                return False
            self.finished_at = time.time()
            result = None
            if error is not None:
                self.error = error
                self.status = "fail" if (self.record and self.record.state == "fail") else "error"
            else:
                self.images = list(images or [])
                self.status = "success"
                urls = self.record.result_urls if self.record else [im.url or "" for im in self.images]
                assert self.task_id is not None  # a success comes from the service, which named the task
                result = Result(task_id=self.task_id, request=self.request, state="success", result_urls=urls,
                                images=self.images, record=self.record, reused=self.reused)
            callbacks = list(self._change_callbacks)
        self._fire(callbacks)  # the history's final event is written before anyone waiting wakes
        if result is None:  # the error was set
            super().set_exception(error)
        else:
            super().set_result(result)
        return True

    def _fire(self, callbacks: list[Callable[[Job], Any]]) -> None:
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # a display callback must never kill the poller
                log.exception("callback failed for task %s", self.task_id)

    # -- display ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        prompt = (self.request.prompt[:40] + "…") if self.request and len(self.request.prompt) > 40 else (
            self.request.prompt if self.request else "")
        return f"<Job {self.task_id} {self.status} {self.elapsed:.1f}s {prompt!r}>"

    def _repr_html_(self) -> str:
        from .cards import job_html

        return job_html(self)
