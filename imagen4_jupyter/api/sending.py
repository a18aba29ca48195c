"""The sender: every createTask of a client leaves from here, on the sender's own threads, in the order asked.

A request is queued first (stage `queued`, no task id yet, `job.local_id` naming it) and its caller returns at
once; a sender thread takes it when a slot under the account's create limit is free *at that moment* (the slot is
counted when the request leaves, never when it is queued: "a slot is not a send"), and status checks never hold it
up, since they run on the poller's workers. Each step is a move of the job's `Ledger`, written before the next one
happens: `queued` (written ahead, or the request is refused), `sending` (written ahead, or it is not sent), then
exactly one of `created` (the task exists; before polling starts), `outcome_unknown` (sent, no answer: never
resent), `not_sent` (the service certainly created nothing) or `cancelled` (withdrawn while it waited). A kernel
that dies in between leaves the history saying which.

A 429 or 455 answer, or a connection never made, created nothing: the request goes back to the head of the
queue and every request of this client waits out one shared pause (the `RetryPolicy`'s delay, Retry-After within
its cap), so a 429 caused by another process of the same account is handled without blocking any caller.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import errors as E
from .job import Job, Ledger, Stage

if TYPE_CHECKING:
    from .pacing import SlidingWindow
    from .request import GenerationRequest
    from .schedules import RetryPolicy

SENDER_THREADS = 4  # slow createTask answers (up to the read timeout) do not hold up the next requests


def new_local_id() -> str:
    return "local-" + secrets.token_hex(8)


@dataclass
class _Send:
    job: Job
    retry_rate_limits: bool
    attempts: int = 0
    leaving: bool = False  # taken by a sender thread: it can no longer be cancelled
    left: threading.Event = field(default_factory=threading.Event)  # set once it has an end or a task id


class Sender:
    """The createTask requests of one client: a FIFO sent by `threads` daemon threads, each request in a create
    slot taken when it leaves."""

    def __init__(self, create: Callable[..., str], *, window: SlidingWindow | None, retry: Callable[[], RetryPolicy],
                 follow: Callable[[Job], None], threads: int = SENDER_THREADS):
        self.create, self.window, self.retry, self.follow = create, window, retry, follow
        self.threads = threads
        self._queue: deque[_Send] = deque()
        self._by_job: dict[int, _Send] = {}
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._paused_until = 0.0  # monotonic: the shared pause after a 429/455 or a connection never made
        self._stopped = False

    # -- the caller's side ----------------------------------------------------------------------
    def enqueue(self, request: GenerationRequest, ledger: Ledger, *, retry_rate_limits: bool = True,
                local_id: str | None = None) -> Job:
        """Queue one createTask; the Job comes back at once (stage `queued`). Its `queued` move is written here,
        first: if that raises (the history cannot be written), nothing is queued and the OSError propagates."""
        if self._stopped:
            raise E.ConfigurationError("This client was closed; make a new one to send requests.")
        job = Job(None, request, local_id=local_id or new_local_id(), ledger=ledger)
        ledger.move(job, "queued", ahead=True)  # on disk before anything can be sent; raising refuses it
        item = _Send(job, retry_rate_limits)
        with self._cond:
            if self._stopped:
                raise E.ConfigurationError("This client was closed; make a new one to send requests.")
            self._queue.append(item)
            self._by_job[id(job)] = item
            job.send_at = time.time() + self._wait_hint_locked()
            self._ensure_started()
            self._cond.notify()
        return job

    def wait_left(self, job: Job, timeout: float | None = None) -> bool:
        """Block until `job`'s request has left and been answered (it has a task id, or an end); False on
        timeout. A KeyboardInterrupt here reaches the caller, who may `cancel` the request."""
        with self._cond:
            item = self._by_job.get(id(job))
        if item is None:
            return True
        return item.left.wait(timeout)

    def cancel(self, job: Job, why: str = "cancelled") -> bool:
        """Withdraw a request that has not left yet: it is never sent (stage `cancelled`, with a not-sent
        error). False if it is already being sent (or done): its outcome will be recorded as usual."""
        with self._cond:
            item = self._by_job.get(id(job))
            if item is None or item.leaving:
                return False
            self._queue.remove(item)
            del self._by_job[id(job)]
        job.ledger.move(job, "cancelled", error=E.CancelledError(f"Not sent: {why} before it left; no task was "
                                                                  "created."))
        self._left(item)
        return True

    def waiting(self) -> int:
        """How many requests wait to be sent."""
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        """No more sending: the requests still waiting end as not sent (recorded as cancelled)."""
        with self._cond:
            self._stopped = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for item in left:
            self._by_job.pop(id(item.job), None)
            item.job.ledger.move(item.job, "cancelled", error=E.CancelledError(
                "Not sent: the client was closed before the request left; no task was created."))
            self._left(item)

    # -- the sender threads ---------------------------------------------------------------------
    def _wait_hint_locked(self) -> float:
        ahead = len(self._queue) - 1
        pause = max(0.0, self._paused_until - time.monotonic())
        if self.window is None:
            return pause
        count, span = self.window.count, self.window.window
        return max(pause, self.window.wait_hint() + max(0, ahead - count + 1) * span / count)

    def _ensure_started(self) -> None:
        self._workers = [t for t in self._workers if t.is_alive()]
        while len(self._workers) < self.threads:
            t = threading.Thread(target=self._run_forever, name=f"imagen4-sender-{len(self._workers)}", daemon=True)
            self._workers.append(t)
            t.start()

    def _next(self) -> _Send | None:
        """Under the lock: wait until the head may leave and take its slot; None when stopped."""
        while True:
            if self._stopped:
                return None
            if not self._queue:
                self._cond.wait()
                continue
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                self._cond.wait(pause)
                continue
            wait = self.window.try_take() if self.window is not None else 0.0
            if wait > 0:
                self._cond.wait(wait)
                continue
            item = self._queue.popleft()
            item.leaving = True
            return item

    def _run_forever(self) -> None:
        while True:
            with self._cond:
                item = self._next()
            if item is None:
                return
            try:
                self._send(item)
            except BaseException:  # never lose a request to a bug: it has been recorded as sending
                logging.getLogger("imagen4_jupyter").exception("sender failed")

    def _send(self, item: _Send) -> None:
        job, ledger = item.job, item.job.ledger
        assert job.request is not None
        try:
            ledger.move(job, "sending", ahead=True)
        except OSError as exc:  # no record ahead of it: it is not sent
            return self._end(item, "not_sent", E.RecordError(f"Not sent: its record could not be written ({exc}).",
                                                             not_sent=True))
        item.attempts += 1
        try:
            task_id = self.create(job.request, retry_rate_limits=False, slot_taken=True)
        except E.OutcomeUnknownError as err:
            return self._end(item, "outcome_unknown", err)
        except E.Imagen4Error as err:
            if item.retry_rate_limits and self._send_again(item, err):
                return
            return self._end(item, "not_sent", err)
        except Exception as exc:  # a bug after sending: the task may exist, so it is never resent
            return self._end(item, "outcome_unknown", E.OutcomeUnknownError(
                f"Unexpected error while sending the task ({exc!r}). " + E.OutcomeUnknownError.hint))
        with self._cond:
            self._by_job.pop(id(job), None)
        try:
            ledger.move(job, "created", task_id=task_id)
        finally:  # a paid task is followed even if recording it failed
            self.follow(job)
            self._left(item)

    def _send_again(self, item: _Send, err: E.Imagen4Error) -> bool:
        """A 429/455 or a connection never made: nothing was created. Back to the head of the queue after one
        shared pause, while the retry policy allows (True); False: it ends as not sent."""
        if not (err.not_sent or isinstance(err, (E.RateLimitError, E.MaintenanceError))):
            return False
        policy = self.retry()
        if item.attempts >= policy.attempts:
            return False
        item.job.ledger.move(item.job, "queued")  # waiting again, certainly not sent: a kernel dying now leaves
        with self._cond:  # it unsent
            until = time.monotonic() + policy.delay(item.attempts - 1, err.retry_after)
            self._paused_until = max(self._paused_until, until)
            item.leaving = False
            item.job.send_at = time.time() + (self._paused_until - time.monotonic())
            self._queue.appendleft(item)
            self._cond.notify_all()
        return True

    def _end(self, item: _Send, stage: Stage, error: E.Imagen4Error) -> None:
        with self._cond:
            self._by_job.pop(id(item.job), None)
        item.job.ledger.move(item.job, stage, error=error)
        self._left(item)

    @staticmethod
    def _left(item: _Send) -> None:
        item.left.set()
