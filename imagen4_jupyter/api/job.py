"""`Job`: the handle of one submitted task, updated by the poller."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import Imagen4Error, TimeoutError
from .records import Result, TaskRecord
from .request import GenerationRequest
from .store import StoredImage


class Job:
    """A submitted task. Thread-safe; updated by the poller.

    `status` is the latest state; `wait()` blocks until done and returns the Result (or raises);
    `add_done_callback(fn)` and `on_change(fn)` call `fn(job)` from the poller thread.
    """

    def __init__(self, task_id: str, request: GenerationRequest | None, *, created_at: float | None = None):
        self.task_id = task_id
        self.request = request
        self.created_at = created_at if created_at is not None else time.time()
        self.tracked_at = time.time()  # overall timeout counts from here (a resumed task gets a fresh limit)
        self.reused = False
        self.status = "submitted"
        self.record: TaskRecord | None = None
        self.images: list[StoredImage] = []
        self.error: Imagen4Error | None = None
        self.checks = 0
        self.first_generating_at: float | None = None
        self.finished_at: float | None = None
        self._result: Result | None = None
        self._finished = False  # set first; `_done` (what wait() waits on) only after the change callbacks ran
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._done_callbacks: list[Callable[[Job], None]] = []
        self._change_callbacks: list[Callable[[Job], None]] = []

    # -- reading ------------------------------------------------------------------------------
    def done(self) -> bool:
        return self._finished

    @property
    def elapsed(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.created_at)

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the task is finished and its images are stored; raise its error if it failed."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"Still {self.status} after waiting {timeout:g} s; call wait() again later.",
                               task_id=self.task_id)
        if self.error is not None:
            raise self.error
        assert self._result is not None
        return self._result

    result = wait

    def exception(self, timeout: float | None = None) -> Imagen4Error | None:
        self._done.wait(timeout)
        return self.error

    def add_done_callback(self, fn: Callable[["Job"], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._done_callbacks.append(fn)
                return
        fn(self)

    def on_change(self, fn: Callable[["Job"], None]) -> None:
        with self._lock:
            self._change_callbacks.append(fn)

    # -- updating (poller side) ---------------------------------------------------------------
    def _set_state(self, status: str, record: TaskRecord | None = None) -> None:
        with self._lock:
            changed = status != self.status
            self.status = status
            if record is not None:
                self.record = record
            if status == "generating" and self.first_generating_at is None:
                self.first_generating_at = time.time()
            callbacks = list(self._change_callbacks) if changed else []
        self._fire(callbacks)

    def _finish(self, *, images: list[StoredImage] | None = None, error: Imagen4Error | None = None,
                reused: bool = False) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self.finished_at = time.time()
            if error is not None:
                self.error = error
                self.status = "fail" if (self.record and self.record.state == "fail") else "error"
            else:
                self.images = list(images or [])
                self.status = "success"
                self._result = Result(task_id=self.task_id, request=self.request, state="success",
                                      result_urls=self.record.result_urls if self.record else
                                      [im.url or "" for im in self.images],
                                      images=self.images, record=self.record, reused=reused)
            changed = list(self._change_callbacks)
        self._fire(changed)  # the history's final event is written before wait() returns
        with self._lock:
            self._done.set()
            done_callbacks, self._done_callbacks = self._done_callbacks, []
        self._fire(done_callbacks)

    def _fire(self, callbacks: list[Callable[["Job"], None]]) -> None:
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # a display callback must never kill the poller
                import logging

                logging.getLogger("imagen4_jupyter").exception("callback failed for task %s", self.task_id)

    # -- display ------------------------------------------------------------------------------
    def __repr__(self) -> str:
        prompt = (self.request.prompt[:40] + "…") if self.request and len(self.request.prompt) > 40 else (
            self.request.prompt if self.request else "")
        return f"<Job {self.task_id} {self.status} {self.elapsed:.1f}s {prompt!r}>"

    def _repr_html_(self) -> str:
        from .cards import job_html

        return job_html(self)


def job_summary(job: Job) -> str:
    """One plain-text line about a job, for terminals and logs."""
    line = f"[imagen4] {job.task_id}: {job.status} ({job.elapsed:.1f} s)"
    if job.error is not None:
        line += f" - {job.error}"
    elif job.images:
        line += " - " + ", ".join(str(im.path) for im in job.images)
    return line
