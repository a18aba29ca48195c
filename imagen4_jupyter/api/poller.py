"""The background poller: one scheduler thread and a few HTTP workers, whatever the number of tasks.

Each tracked job has one entry in a time-ordered heap. When it is due, a worker asks for the task's
state once; the job is rescheduled by the polling schedule, or with backoff after a retryable error.
A task that succeeds has its images downloaded at once (result URLs expire).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import errors as E
from .job import Job, stage_of
from .schedules import PollSchedule, Schedule
from .store import StoredImage
from .task import TaskRecord

__all__ = ["Backoff", "ImageSink", "PollSchedule", "PollTarget", "Poller"]  # PollSchedule lives in schedules.py

PROTOCOL_RETRIES = 3  # extra status checks after an unreadable answer before the job fails
MAX_CONSECUTIVE_500 = 5  # a 500 is not always transient (apikley.md 7): this many in a row for one task end it


class Backoff(Protocol):
    """The pause before asking again after a retryable error (`RetryPolicy`)."""

    def delay(self, attempt: int, retry_after: float | None = None) -> float: ...


class ImageSink(Protocol):
    """Where downloaded images go (`ImageStore`)."""

    def put(self, data: bytes, *, url: str | None = None, index: int = 0,
            task_id: str | None = None) -> StoredImage: ...


class PollTarget(Protocol):
    """What the poller needs from a client (`Imagen4Client` is one): fetch a record once, download an image,
    store it, and the schedule and backoff to follow. The poller knows nothing else about the client."""

    @property
    def schedule(self) -> Schedule: ...  # read-only here, so a client may hold a subtype (`SmartSchedule`)

    @property
    def retry(self) -> Backoff: ...

    @property
    def store(self) -> ImageSink: ...

    def get_task_once(self, task_id: str) -> TaskRecord: ...  # one request in a slot taken, no retrying

    def query_slot(self) -> float: ...  # take a recordInfo slot if free (0.0), else seconds until one is

    def download(self, url: str, *, task_id: str | None = None) -> bytes: ...


@dataclass
class Follow:
    """What the poller keeps about one task it follows (one record per task, not one dict per fact)."""

    job: Job
    errors: int = 0  # retryable errors in a row
    fives: dict[str, tuple[int, int]] = field(default_factory=dict)  # "check" | "download" -> (500s in a row,
    # the job's checks at the last one)
    stretch: float = 1.0  # factor on its schedule's delays (a callback will come)
    poked: bool = False  # poked while its check was in flight: the next check goes at once


class Poller:
    """Follows jobs in the background for one client, moving each through its ledger (`Job.ledger`). Threads
    start on first use."""

    def __init__(self, client: PollTarget, max_workers: int = 3):
        self.client = client
        self.max_workers = max_workers
        self._heap: list[tuple[float, int, Job | None, Any]] = []  # (due, seq, job, "check" | "download" | fn)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopped = False
        self._follows: dict[str, Follow] = {}  # task id -> what is kept while it is followed
        self._stretch: dict[str, float] = {}  # task id -> stretch asked for before it is tracked (a callback)
        self._busy = 0  # items handed to workers and not finished: dispatch waits for a free worker

    @property
    def active(self) -> dict[str, Job]:
        """The jobs followed now, by task id."""
        with self._cond:
            return {tid: f.job for tid, f in self._follows.items()}

    def _follow(self, job: Job) -> Follow:
        return self._follows.get(job.task_id or "") or Follow(job)

    # -- public -------------------------------------------------------------------------------
    def track(self, job: Job, delay: float | None = None) -> None:
        """Follow `job` until it settles: first check after `delay` seconds (by default the schedule's; at once
        for a job created more than a second ago, such as a resumed task)."""
        now = time.time()
        job.tracked_at = now
        with self._cond:
            self._follows[job.task_id or ""] = Follow(job, stretch=self._stretch.pop(job.task_id or "", 1.0))
            if delay is None:
                delay = self._delay(job, now) if job.created_at > now - 1 else 0.0
            self._push(min(now + delay, self._deadline(job)), job, "check")
            self._ensure_started()

    def stop(self) -> None:
        """Stop following jobs; any still running end with an Imagen4TimeoutError (`track()` them to resume)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            left = [f.job for f in self._follows.values()]
            self._follows.clear()
            self._heap.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for job in left:
            job.ledger.move(job, "failed", error=E.Imagen4TimeoutError(
                f"The client was closed while the task was still {job.status}; it may still finish on the "
                "service. `client.track(task_id)` on a new client picks it up.", task_id=job.task_id))

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """Run `fn()` on a worker after `delay` seconds: periodic work (the magic's elapsed-time refresh of
        live cards) shares these threads instead of starting its own."""
        with self._cond:
            self._push(time.time() + delay, None, fn)
            self._ensure_started()

    def poke(self, task_id: str) -> bool:
        """Check a task now (for example when its callback arrived). Pokes coalesce: a check already due goes
        at once, and a check in flight is followed by one more at once, however many pokes came meanwhile.
        False if this poller does not follow `task_id` (a hint for someone else's task changes nothing)."""
        with self._cond:
            follow = self._follows.get(task_id)
            if follow is None:
                return False
            for i, (_, seq, job, action) in enumerate(self._heap):
                if job is not None and job.task_id == task_id and action == "check":
                    self._heap[i] = (0.0, seq, job, action)
                    heapq.heapify(self._heap)
                    self._cond.notify()
                    return True
            follow.poked = True  # its check (or download) is in flight: ask once more when it is back
            return True

    def expect_callback(self, task_id: str, stretch: float = 4.0) -> None:
        """A callback will say when `task_id` finished (`poke`): its status checks become a sparse safety net,
        the schedule's delays times `stretch`. Call before `track`."""
        with self._cond:
            if task_id in self._follows:
                self._follows[task_id].stretch = max(1.0, stretch)
            else:
                self._stretch[task_id] = max(1.0, stretch)

    def _delay(self, job: Job, now: float) -> float:
        follow = self._follows.get(job.task_id or "")
        return self.client.schedule.next_delay(job, now) * (follow.stretch if follow else 1.0)

    # -- scheduler ----------------------------------------------------------------------------
    def _push(self, due: float, job: Job | None, action: str | Callable[[], object]) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), job, action))
        self._cond.notify()

    def _ensure_started(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopped = False
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="imagen4-http")
            self._thread = threading.Thread(target=self._run, name="imagen4-poller", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                picked = None
                while picked is None:
                    while not self._stopped and (not self._heap or self._heap[0][0] > time.time()):
                        timeout = (self._heap[0][0] - time.time()) if self._heap else None
                        self._cond.wait(timeout)
                    if self._stopped:
                        return
                    picked = self._next_due(time.time())
                job, action = picked
                self._busy += 1
            assert self._pool is not None  # made with the thread, in _ensure_started
            try:
                self._pool.submit(self._work, job, action)
            except RuntimeError:  # pool shut down
                return

    def _next_due(self, now: float) -> tuple[Job | None, Any] | None:
        """The next due item to run (lock held). Downloads and timers go first; a status check needs a slot
        under the query limit, and when the budget is short the due check most likely complete gets it
        (`schedule.priority`). None: nothing may run yet (the condition was waited on meanwhile)."""
        if self._busy >= self.max_workers:  # every worker busy: a slot taken now would be used late
            self._cond.wait(0.05)
            return None
        if self._heap[0][3] != "check":
            _, _, job, action = heapq.heappop(self._heap)
            return job, action
        due = [i for i, entry in enumerate(self._heap) if entry[0] <= now]
        other = next((i for i in due if self._heap[i][3] != "check"), None)
        if other is not None:
            return self._take(other)
        wait = self.client.query_slot()
        if wait > 0:  # the query budget, not the schedule, is the limit now
            self._cond.wait(wait)
            return None
        if len(due) == 1:
            return self._take(due[0])
        priority = self.client.schedule.priority

        def rank(i: int) -> tuple[float, int]:
            at, seq, job, _ = self._heap[i]
            assert job is not None  # every due entry is a status check here, and a check has its job
            return priority(job, now, at), -seq

        return self._take(max(due, key=rank))

    def _take(self, index: int) -> tuple[Job | None, Any]:
        _, _, job, action = self._heap[index]
        last = self._heap.pop()
        if index < len(self._heap):
            self._heap[index] = last
            heapq.heapify(self._heap)
        return job, action

    # -- work (in a pool thread) --------------------------------------------------------------
    def _work(self, job: Job | None, action: str | Callable[[], object]) -> None:
        try:
            self._do(job, action)
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify()

    def _do(self, job: Job | None, action: str | Callable[[], object]) -> None:
        if job is None:  # call_later
            assert callable(action)  # call_later pushes a function, with no job
            try:
                action()
            except Exception:
                logging.getLogger("imagen4_jupyter").exception("scheduled call failed")
            return
        assert isinstance(action, str)  # a job's action: "check" or "download"
        try:
            if action == "check":
                self._check(job)
            else:
                self._download(job)
        except E.Imagen4Error as err:
            self._retry_or_fail(job, action, err)
        except Exception as exc:  # never lose a job to an unexpected bug: report it on the job
            self._end(job, error=E.ProtocolError(f"Unexpected error while following the task: {exc!r}",
                                                 task_id=job.task_id))

    def _check(self, job: Job) -> None:
        assert job.task_id is not None
        record = self.client.get_task_once(job.task_id)
        job.checks += 1
        self._follow(job).errors = 0
        job.ledger.move(job, stage_of(record.state), record=record)
        if record.state == "success":
            self._download(job)
        elif record.state == "fail":
            self._end(job, error=E.GenerationFailedError(service_message=record.fail_msg or "no reason given",
                                                         fail_code=record.fail_code, task_id=job.task_id))
        else:
            now = time.time()
            max_wait = self.client.schedule.max_wait
            if now >= self._deadline(job):
                self._end(job, error=E.Imagen4TimeoutError(
                    f"Still {record.state} after {max_wait:g} s, so this client stopped waiting. "
                    + E.Imagen4TimeoutError.hint, task_id=job.task_id))
            else:
                # never sleep past the overall limit: the last check happens at the deadline
                with self._cond:
                    follow = self._follow(job)
                    poked, follow.poked = follow.poked, False
                    due = now if poked else min(now + self._delay(job, now), self._deadline(job))
                    self._push(due, job, "check")

    def _download(self, job: Job) -> None:
        """Download and store the images asked for: a service that returns more URLs than `num_images` gets
        the first ones taken and the rest noted on `job.extra_urls` (never downloaded)."""
        assert job.record is not None
        urls = job.record.result_urls
        asked = job.request.num_images if job.request is not None else len(urls)
        extra = urls[asked:]
        if extra:
            logging.getLogger("imagen4_jupyter").warning(
                "task %s: the service returned %d image URLs for %d asked for; the %d extra were not downloaded",
                job.task_id, len(urls), asked, len(urls) - asked)
        images = []
        for index, url in enumerate(urls[:asked]):
            data = self.client.download(url, task_id=job.task_id)
            image = self.client.store.put(data, url=url, index=index, task_id=job.task_id)
            image.meta.update(task_id=job.task_id, model=job.record.model or (job.request.model if job.request
                                                                                else None))
            if job.request is not None:
                image.meta["request"] = job.request.to_dict()
            images.append(image)
        self._end(job, images=images, extra_urls=extra)

    def _retry_or_fail(self, job: Job, action: str, err: E.Imagen4Error) -> None:
        follow = self._follow(job)
        follow.errors += 1
        count = follow.errors
        now = time.time()
        # The task keeps running on the service whatever happens here, so a transient failure (429, 455,
        # 5xx, connection) is retried with backoff until the overall limit rather than a fixed count.
        # A garbled or redirected status answer (ProtocolError) may be a proxy's hiccup: a status check is
        # safe to repeat, so it is asked again a few times before the job fails with that error.
        again = err.retryable or (action == "check" and isinstance(err, (E.ProtocolError, E.NotFoundError))
                                  and not err.final and count <= PROTOCOL_RETRIES)
        if again and err.code == 500:  # retried until the overall limit, but not for 500s forever
            kind = "download" if isinstance(err, E.DownloadError) else "check"  # a failed download re-checks first
            fives, checks = follow.fives.get(kind, (0, job.checks))
            # a good status answer between two status 500s starts the count again
            fives = fives + 1 if kind == "download" or checks == job.checks else 1
            follow.fives[kind] = (fives, job.checks)
            if fives >= MAX_CONSECUTIVE_500:
                return self._end(job, error=too_many_500s(job.task_id or "", kind, fives, err))
        if again and now < self._deadline(job):
            delay = self.client.retry.delay(min(count - 1, 30), err.retry_after)
            with self._cond:
                self._push(min(now + delay, self._deadline(job)), job, action)
            return
        self._end(job, error=err)

    def _deadline(self, job: Job) -> float:
        return job.tracked_at + self.client.schedule.max_wait

    def _end(self, job: Job, *, images: list[StoredImage] | None = None, error: E.Imagen4Error | None = None,
             extra_urls: list[str] | None = None) -> None:
        with self._cond:
            self._follows.pop(job.task_id or "", None)
        if error is not None:
            job.ledger.move(job, "failed", error=error)
        else:
            job.ledger.move(job, "succeeded", images=images or [], extra_urls=extra_urls or [])


def too_many_500s(task_id: str, kind: str, count: int, last: E.Imagen4Error) -> E.Imagen4Error:
    """The error that ends a job after `count` 500 answers in a row (not final: `resume` may try later)."""
    what = "status check" if kind == "check" else "image download"
    text = (f"The service answered 500 {count} times in a row to this task's {what}, so this client stopped "
            "asking (a 500 is not always a passing fault). Try again after a while: `%imagen4 resume` (or "
            "`client.track(task_id)`) picks the task up; check it on the Apikley dashboard if this repeats.")
    cls = E.DownloadError if isinstance(last, E.DownloadError) else E.ServerError
    return cls(text, task_id=task_id, code=500, service_message=last.service_message, retryable=False, final=False)
