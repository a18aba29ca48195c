"""Running one batch: `BatchRun` dispatches its items with at most `concurrency` tasks in flight, one shared
pause when the service refuses (429/455), createTask outcomes that are never guessed, and re-following of tasks
whose polling hit a transient error. `batch.generate_many` builds and starts it; its `BatchResult` controls it
through the `BatchControl` interface (`stop`, `join`, `submitting`)."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..api import errors as E
from ..api.job import Job
from ..api.spend import PriceBook, default_price_book
from .budget import Budget, make_plan
from .plan import CREATE, FOLLOW, LOST, REUSE, ResumePlan
from .progress import Progress, ProgressState, ipython_shell
from .results import BatchItem, item_counts

if TYPE_CHECKING:
    from ..api.client import Imagen4Client
    from ..records.history import TaskEntry
    from ..records.session import Session

# the batch's policy: these stop the whole batch (every other item would get the same answer)
ABORTING = (E.AuthenticationError, E.InsufficientCreditsError, E.ConfigurationError, E.FeatureDisabledError,
            E.BudgetExceededError)  # the kernel's budget (records/spend.py): stop, nothing more is sent
# a createTask answered with one of these created no task, so its estimated cost goes back to the budget
UNBILLED = (E.RateLimitError, E.MaintenanceError, E.AuthenticationError, E.InsufficientCreditsError,
            E.ServiceValidationError, E.FeatureDisabledError, E.ConfigurationError, E.InvalidRequestError,
            E.BudgetExceededError)
MAX_CONSECUTIVE_429 = 30  # then the batch stops submitting (the service keeps refusing)
MAX_FOLLOWS = 3  # re-follow a task whose polling ended with a transient error this many times


def lost_message(event: Any) -> str:
    """Why an item is not sent again: an earlier createTask of it has no known outcome (or a live kernel holds
    it in its send queue), with what to do."""
    if isinstance(event, dict) and event.get("alive"):
        return ("A kernel that is still running, or may be (this one, or another whose lease on this folder has not "
                "lapsed), holds this request in its send queue and will send it; not sent again here. Wait for it, "
                "then run the batch again.")
    if isinstance(event, dict) and event.get("event") == "sending":
        why = "A kernel was sending this request when it stopped (or it is still on its way), with no answer recorded."
    else:
        why = "An earlier run of this batch sent this request without getting an answer."
    return f"{why} {E.OutcomeUnknownError.hint} To send it anyway: force=True (`%imagen4 batch --force`)."


def _execution_count() -> int | None:
    ip = ipython_shell()
    return getattr(ip, "execution_count", None) if ip is not None else None


class BatchRun:
    """Dispatches the items of one batch from the calling thread (or one background thread); createTask
    calls go to a small pool. The `BatchControl` of its `BatchResult`."""

    def __init__(self, items: list[BatchItem], *, session: Session | None, client: Imagen4Client,
                 concurrency: int, plan: ResumePlan, bid: str, timeout: float | None,
                 budget: float | None = None, prices: PriceBook | None = None):
        self.items = items
        self.session = session
        self.client = client
        self.concurrency = concurrency
        self.plan = plan
        self.bid = bid
        self.timeout = timeout
        self.prices = prices if prices is not None else default_price_book()
        self.budget = Budget(budget, self.prices) if budget is not None else None
        self.progress: Progress | None = None
        self.cond = threading.Condition()
        self.queue: deque[BatchItem] = deque(items)
        self.in_flight = 0
        self.gate_until = 0.0  # monotonic; no createTask before this (the shared backoff)
        self.consecutive_429 = 0
        self.aborted: BaseException | None = None
        self.closed = False
        self.thread: threading.Thread | None = None  # generate_many(wait=False)
        self.cell = _execution_count()
        self.stats: dict[str, Any] = {
            "items": len(items), "concurrency": concurrency, "created": 0, "create_requests": 0,
            "rate_limited": 0, "pauses": 0, "paused_s": 0.0, "not_sent_retries": 0, "reused": 0, "followed": 0,
            "lost": 0, "max_in_flight": 0, "wall_s": 0.0, "budget": budget, "estimated_credits": 0.0,
            "over_budget": 0}
        self.decided: dict[int, tuple[str, Any]] = {}
        self.started = time.monotonic()

    # -- BatchControl -------------------------------------------------------------------------------
    @property
    def submitting(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self, why: str) -> None:
        with self.cond:
            if self.aborted is None:
                self.aborted = KeyboardInterrupt()
            self._stop_queue(why)
            self.cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.submitting

    def show_progress(self, progress: Progress) -> None:
        """Show the run on `progress` (updated in place while it sends, and once at its end)."""
        self.progress = progress

    def start_background(self, when_done: Callable[[], None]) -> None:
        """Run in a daemon thread; `when_done()` runs at its end whatever happened."""
        def main() -> None:
            try:
                self.run()
            except BaseException as err:  # noqa: BLE001 - a thread's end: say it in the items, not in stderr
                with self.cond:
                    self.aborted = err
                    self._stop_queue(f"not sent: the batch stopped ({type(err).__name__}: {err})")
            finally:
                when_done()

        self.thread = threading.Thread(target=main, name="imagen4-batch-run", daemon=True)
        self.thread.start()

    # -- the loop (calling thread) ----------------------------------------------------------------
    def run(self) -> None:
        """Send every item (the history is read first: what an earlier run left is reused or followed)."""
        self.plan.read()
        if self.progress is not None:  # the plan's one line first: reused, to create per model, credits, balance
            self.progress.announce(make_plan(self.items, self.plan, prices=self.prices, client=self.client,
                                             budget=None if self.budget is None else self.budget.limit).line())
        deadline = None if self.timeout is None else self.started + self.timeout
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, 4)), thread_name_prefix="imagen4-batch")
        try:
            while True:
                with self.cond:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        self._stop_queue(f"not sent: the batch timeout of {self.timeout:g} s passed")
                        break
                    self._dispatch(pool, now)
                    if not self.queue and self.in_flight == 0:
                        break
                    wait = 0.25
                    if self.queue and self.gate_until > now:
                        wait = min(wait, self.gate_until - now)
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - now))
                    self.cond.wait(max(0.01, wait))
                self._show_progress()
        finally:
            with self.cond:
                self.closed = True
            pool.shutdown(wait=False)
            self.stats["wall_s"] = round(time.monotonic() - self.started, 3)
            self._show_progress(final=True)

    def _show_progress(self, final: bool = False) -> None:
        if self.progress is None or not self.progress.due(final):
            return
        now = time.monotonic()
        with self.cond:
            waiting = self.gate_until - now if self.queue else 0.0
            state = ProgressState(item_counts(self.items), max(0.0, waiting), self.stats["rate_limited"],
                                  now - self.started)
        self.progress.update(state, final=final)

    def _dispatch(self, pool: ThreadPoolExecutor, now: float) -> None:
        """Under the lock: hand out items while there is room and the gate is open."""
        while self.queue and not self.aborted:
            item = self.queue[0]
            if item.index not in self.decided:  # decided once: following claims a task
                self.decided[item.index] = self.plan.resolve(item)
            action, value = self.decided[item.index]
            if action == REUSE:
                self.queue.popleft()
                self._reuse(item, value)
                continue
            if action == LOST:
                self.queue.popleft()
                item.state, item.origin = "lost-unknown", "created"
                item.error = E.OutcomeUnknownError(lost_message(value))
                item.finished_at = time.time()
                self.stats["lost"] += 1
                continue
            if action == CREATE and self.budget is not None and self.budget.stopped_at is not None:
                self._not_in_budget(item, self.budget.take(item) or "")  # the budget stopped: none after it
                continue
            if self.in_flight >= self.concurrency:
                return
            if action == FOLLOW:
                self.queue.popleft()
                self._take_slot()
                self._follow(item, value)
                continue
            if now < self.gate_until:
                return
            if self.budget is not None:  # its estimated cost is charged now, or it is not sent
                note = self.budget.take(item)
                if note is not None:
                    self._not_in_budget(item, note)
                    continue
                self.stats["estimated_credits"] = self.budget.spent
            self.queue.popleft()
            self._take_slot()
            item.origin = "created"
            item.state = "submitting"
            item.started_at = time.time()
            self.stats["create_requests"] += 1
            pool.submit(self._create, item, value if action == CREATE else None)

    def _not_in_budget(self, item: BatchItem, note: str) -> None:
        """Under the lock: the item's estimated cost does not fit what is left of the budget (or an earlier
        item's did not): it is not sent."""
        self.queue.popleft()
        item.state, item.note, item.finished_at = "over-budget", note, time.time()  # not sent, not a failure
        self.stats["over_budget"] += 1

    def _take_slot(self) -> None:
        self.in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)

    def _free_slot(self) -> None:
        self.in_flight -= 1
        self.cond.notify_all()

    def _stop_queue(self, why: str, state: str = "not-submitted") -> None:
        while self.queue:
            item = self.queue.popleft()
            item.state, item.note = state, why
            if self.aborted is not None and state == "not-submitted":
                item.error = self.aborted
            item.finished_at = time.time()

    # -- item outcomes ----------------------------------------------------------------------------
    def _reuse(self, item: BatchItem, entry: TaskEntry) -> None:
        assert self.session is not None
        item.job = self.session.job_from_history(entry, reused=True)
        item.origin = "reused"
        self.stats["reused"] += 1
        self._finish(item, item.job)

    def _follow(self, item: BatchItem, entry: TaskEntry) -> None:
        """Follow an earlier run's task: the session resumes it (or keeps following it), no new task."""
        assert self.session is not None
        resumed = self.session.resume([entry])
        job = resumed[0] if resumed else self.session.jobs[entry.task_id]
        item.job, item.origin, item.state = job, "followed", "running"
        item.started_at = time.time()
        self.stats["followed"] += 1
        job.add_done_callback(lambda j: self._job_done(item, j))

    def _create(self, item: BatchItem, local_id: str | None = None) -> None:
        """In a pool thread: one createTask; the outcome goes back under the lock. `local_id`: a request a dead
        kernel queued and never sent, sent under its own name (its record in the history then has an end)."""
        try:  # one createTask attempt: a 429 comes back here, to pause every submission (one shared backoff)
            if self.session is not None:  # recorded before polling, like any session job
                job = self.session.submit(item.request, force=True, source="batch", cell=self.cell,
                                          extra={"batch": {"id": self.bid, "index": item.index}},
                                          retry_rate_limits=False, queue=False,  # this thread waits for a slot
                                          local_id=local_id)
            else:
                job = self.client.submit_request(item.request, retry_rate_limits=False, queue=False)
        except BaseException as err:  # noqa: BLE001 - every outcome must release the slot
            with self.cond:
                self._create_failed(item, err)
            return
        with self.cond:
            self.stats["created"] += 1
            self.consecutive_429 = 0
            item.job, item.state = job, "running"
        job.add_done_callback(lambda j: self._job_done(item, j))

    def _create_failed(self, item: BatchItem, err: BaseException) -> None:
        self._free_slot()
        if self.budget is not None and isinstance(err, E.Imagen4Error) and (err.not_sent or isinstance(err, UNBILLED)):
            self.budget.give_back(item)  # the service refused it, or it never left: nothing was billed
            self.stats["estimated_credits"] = self.budget.spent
        if isinstance(err, E.Imagen4Error) and (isinstance(err, (E.RateLimitError, E.MaintenanceError))
                                                or err.not_sent):
            self._send_again_later(item, err)  # certainly not created: wait (all of us), then send it again
            return
        if isinstance(err, E.OutcomeUnknownError):
            item.state, item.error = "lost-unknown", err
            item.finished_at = time.time()
            self.stats["lost"] += 1
            return
        if isinstance(err, E.BudgetExceededError):  # the kernel's budget: nothing sent, not a failure
            item.state, item.note, item.finished_at = "over-budget", f"budget: {err}", time.time()
            self.aborted = err
            self._stop_queue(f"budget: the kernel's budget stopped the batch at item {item.index}", "over-budget")
            return
        self._fail(item, err)
        if isinstance(err, ABORTING):
            self.aborted = err
            self._stop_queue(f"not sent: {err.title}")
        elif not isinstance(err, Exception):  # KeyboardInterrupt / SystemExit in a worker
            self.aborted = err

    def _send_again_later(self, item: BatchItem, err: E.Imagen4Error) -> None:
        """Under the lock: the service refused (429/455) or the request never left: one shared pause, the
        client's `RetryPolicy.delay` (Retry-After within its cap), then the item goes first again."""
        if isinstance(err, E.RateLimitError):
            self.stats["rate_limited"] += 1
        else:
            self.stats["not_sent_retries"] += 1
        self.consecutive_429 += 1
        if self.consecutive_429 > MAX_CONSECUTIVE_429:
            self._fail(item, err)
            self.aborted = err
            self._stop_queue(f"not sent: the service kept refusing ({err.title})")
            return
        now = time.monotonic()
        until = now + self.client.retry.delay(self.consecutive_429 - 1, err.retry_after)
        if until > self.gate_until:
            if self.gate_until <= now:
                self.stats["pauses"] += 1
                self.stats["paused_s"] += until - now
            else:
                self.stats["paused_s"] += until - self.gate_until
            self.gate_until = until
        item.state, item.origin = "pending", None
        self.decided[item.index] = (CREATE, None)
        if self.closed or self.aborted is not None:  # the run is over or stopping: nobody will send it again
            item.state, item.note = "not-submitted", f"not sent: {err.title} after the batch had stopped"
            item.error, item.finished_at = err, time.time()
            return
        self.queue.appendleft(item)

    def _fail(self, item: BatchItem, err: BaseException) -> None:
        item.state = "fail" if isinstance(err, E.GenerationFailedError) else "error"
        item.error = err
        item.finished_at = time.time()

    def _job_done(self, item: BatchItem, job: Job) -> None:
        """Poller thread: a followed or created task finished (or its polling gave up)."""
        with self.cond:
            err = job.error
            if (err is not None and err.retryable and not err.final and item.follows < MAX_FOLLOWS
                    and job.task_id is not None):  # (every job here was created: queue=False raised otherwise)
                # polling hit a transient error; the task lives on: follow it again (no new task)
                item.follows += 1
                assert job.task_id is not None
                again = (self.session.follow(job.task_id, item.request, created_at=job.created_at)  # to the history
                         if self.session is not None else
                         self.client.track(job.task_id, item.request, created_at=job.created_at))
                item.job = again
                again.add_done_callback(lambda j: self._job_done(item, j))
                return
            self._finish(item, job)
            self._free_slot()

    def _finish(self, item: BatchItem, job: Job) -> None:
        item.job = job
        item.finished_at = time.time()
        if job.error is None:
            item.state, item.error = "success", None
        else:
            self._fail(item, job.error)
