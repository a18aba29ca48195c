"""Many requests at once: `generate_many(items)` with bounded concurrency, one shared rate-limit backoff,
a progress line, resume through the history, and the results as a table.

Every item is validated before anything is sent. At most `concurrency` tasks are in flight (a createTask
request sent, or a task being followed, and not finished). When the service answers 429 (or 455), every
submission pauses until its Retry-After has passed. A createTask whose outcome is unknown (sent, no answer)
is never resent: the item is reported as `lost-unknown`.

With a `Session` (the default: the kernel's), each task is recorded in the per-notebook history, tagged
with the batch and the item's index, so running the same batch again follows its unfinished tasks and shows
its finished ones without creating new tasks.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..api import errors as E
from ..api.cards import shorten
from ..api.job import Job
from ..api.request import GenerationRequest
from .results import (
    BatchItem,
    BatchResult,
    _ipython,
    _plain,
    _Progress,
)

if TYPE_CHECKING:
    from ..api.client import Imagen4Client
    from ..records.history import TaskEntry
    from ..records.session import Session

REQUEST_FIELDS = ("prompt", "negative_prompt", "aspect_ratio", "num_images", "seed", "callback_url")
ABORTING = (E.AuthenticationError, E.InsufficientCreditsError, E.ConfigurationError, E.FeatureDisabledError)
MAX_CONSECUTIVE_429 = 30  # then the batch stops submitting (the service keeps refusing)
MAX_FOLLOWS = 3  # re-follow a task whose polling ended with a transient error this many times
MAX_RETRY_AFTER = 300.0

last_batch: BatchResult | None = None  # the newest batch, also after an interrupt (Ctrl-C / kernel interrupt)
_submitting: dict[tuple, BatchResult] = {}  # batches still sending, by (history or client, batch id)
_submitting_lock = threading.Lock()


def _as_list(items: Any) -> tuple[list, bool]:
    """A list of items; a DataFrame becomes its rows as dicts (only request-field columns are used)."""
    if isinstance(items, (str, bytes, GenerationRequest, Mapping)):
        raise E.InvalidRequestError("generate_many takes a list of prompts, request dicts or GenerationRequests; "
                                    "for a single prompt use the %%imagen4 magic or client.generate().")
    if hasattr(items, "columns") and hasattr(items, "to_dict"):  # a pandas DataFrame
        cols = [c for c in items.columns if c in REQUEST_FIELDS]
        if "prompt" not in cols:
            raise E.InvalidRequestError("The DataFrame has no `prompt` column; pass df['your column'] or rename it.")
        return items[cols].to_dict("records"), True
    if not isinstance(items, Iterable):
        raise E.InvalidRequestError(f"generate_many needs a list of items, not {type(items).__name__}.")
    return list(items), False


def build_requests(items: Any, **defaults: Any) -> list[GenerationRequest]:
    """Validate every item into a GenerationRequest; the first bad one raises, naming its index.

    Items are prompts (str), dicts of request fields (over `defaults`) or GenerationRequests (used as given).
    """
    unknown = sorted(set(defaults) - set(REQUEST_FIELDS) - {"prompt"})
    if unknown:
        raise E.InvalidRequestError(f"Unknown option(s) {', '.join(unknown)}; request fields are "
                                    f"{', '.join(REQUEST_FIELDS[1:])}.")
    if "prompt" in defaults:
        raise E.InvalidRequestError("`prompt` cannot be a default; each item gives its own prompt.")
    listed, from_frame = _as_list(items)
    base = {k: _plain(v) for k, v in defaults.items()}
    requests: list[GenerationRequest] = []
    for index, item in enumerate(listed):
        item = _plain(item)
        try:
            if isinstance(item, GenerationRequest):
                req = item
            elif isinstance(item, str):
                req = GenerationRequest.create(item, **base)
            elif isinstance(item, Mapping):
                extra = sorted(str(k) for k in item if k not in REQUEST_FIELDS)
                if extra:
                    raise E.InvalidRequestError(f"unknown field(s) {', '.join(extra)}; request fields are "
                                                f"{', '.join(REQUEST_FIELDS)}.")
                fields = {**base, **{k: _plain(v) for k, v in item.items()}}
                if from_frame:  # an empty cell means "use the default"; 7.0 in a column with gaps means 7
                    fields.update({k: base[k] for k, v in item.items() if _plain(v) is None and k in base})
                    fields = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in fields.items()}
                prompt = fields.pop("prompt", None)
                req = GenerationRequest.create(prompt, **fields)
            elif item is None:
                raise E.InvalidRequestError("the item is empty (None).")
            else:
                raise E.InvalidRequestError(f"expected a prompt, a dict or a GenerationRequest, not "
                                            f"{type(item).__name__}.")
        except E.InvalidRequestError as err:
            label = f"Item {index}"
            prompt = item.get("prompt") if isinstance(item, Mapping) else item
            if isinstance(prompt, str) and prompt.strip():
                label += f" ({shorten(prompt, 40)!r})"
            raise E.InvalidRequestError(f"{label}: {err} Nothing was sent.") from None
        requests.append(req)
    return requests


def batch_id(requests: list[GenerationRequest], name: str | None = None) -> str:
    """What identifies "the same batch" in the history: the name if given, else the ordered request keys."""
    if name:
        return "name:" + name
    digest = hashlib.sha256(json.dumps([r.key() for r in requests]).encode()).hexdigest()
    return digest[:20]


def _execution_count() -> int | None:
    ip = _ipython()
    return getattr(ip, "execution_count", None) if ip is not None else None


def default_session() -> Session:
    """The `%%imagen4` magic's session when the extension is loaded (same history and settings), else the
    kernel's session."""
    ip = _ipython()
    if ip is not None:
        try:
            magics = ip.magics_manager.registry.get("Imagen4Magics")
            if magics is not None:
                return magics.session
        except Exception:  # pragma: no cover - an older magic
            pass
    from ..records.session import get_session

    return get_session()


# -- the run -------------------------------------------------------------------------------------------
class _Run:
    """Dispatches the items of one batch from the calling thread; createTask calls go to a small pool."""

    def __init__(self, items: list[BatchItem], *, session: Session | None, client: Imagen4Client,
                 concurrency: int, force: bool, reuse: str | None, bid: str, timeout: float | None,
                 progress: _Progress | None):
        self.items = items
        self.session = session
        self.client = client
        self.concurrency = concurrency
        self.force = force
        self.reuse = reuse
        self.bid = bid
        self.timeout = timeout
        self.progress = progress
        self.cond = threading.Condition()
        self.queue: deque[BatchItem] = deque(items)
        self.in_flight = 0
        self.gate_until = 0.0  # monotonic; no createTask before this (the shared backoff)
        self.consecutive_429 = 0
        self.aborted: BaseException | None = None
        self.closed = False
        self.cell = _execution_count()
        self.stats: dict[str, Any] = {
            "items": len(items), "concurrency": concurrency, "created": 0, "create_requests": 0,
            "rate_limited": 0, "pauses": 0, "paused_s": 0.0, "not_sent_retries": 0, "reused": 0, "followed": 0,
            "lost": 0, "max_in_flight": 0, "wall_s": 0.0}
        self.plan: dict[int, tuple[str, Any]] = {}
        self.claimed: set[str] = set()
        self.decided: dict[int, tuple[str, Any]] = {}
        self.unfinished_by_key: dict[str, list[TaskEntry]] = {}
        self.started = time.monotonic()

    # -- planning from the history (resume) -------------------------------------------------------
    def make_plan(self) -> None:
        if self.session is None or self.force:
            return
        history = self.session.history
        latest: dict[int, tuple[str, Any]] = {}
        try:
            events = list(history.iter_events())
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
        for idx, (kind, value) in latest.items():
            if kind == "unknown":
                self.plan[idx] = ("lost", value)
                continue
            entry = history.get(value)
            if entry is None:
                continue
            self.claimed.add(entry.task_id)
            if entry.state == "success":
                # images gone from disk (or not store files): follow the task again, which downloads them
                # (no new task)
                self.plan[idx] = ("reuse", entry) if history.images_on_disk(entry) else ("follow", entry)
            elif not entry.finished:
                self.plan[idx] = ("follow", entry)
            # failed for good: created again
        for entry in history.unfinished():
            if entry.task_id not in self.claimed and entry.request_key:
                self.unfinished_by_key.setdefault(entry.request_key, []).append(entry)

    def resolve(self, item: BatchItem) -> tuple[str, Any]:
        """What to do with an item: ("reuse", entry) / ("follow", entry) / ("lost", event) / ("create", None)."""
        if self.session is None or self.force:
            return "create", None
        planned = self.plan.get(item.index)
        if planned is not None:
            return planned
        entry = self.session.find_reusable(item.request, self.reuse)
        if entry is not None:
            return "reuse", entry
        for entry in self.unfinished_by_key.get(item.request.key(), []):
            if entry.task_id not in self.claimed:
                self.claimed.add(entry.task_id)
                return "follow", entry
        return "create", None

    # -- the loop (calling thread) ----------------------------------------------------------------
    def run(self) -> None:
        self.make_plan()
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
                if self.progress is not None:
                    self.progress.update(self)
        finally:
            with self.cond:
                self.closed = True
            pool.shutdown(wait=False)
            self.stats["wall_s"] = round(time.monotonic() - self.started, 3)
            if self.progress is not None:
                self.progress.update(self, final=True)

    def _dispatch(self, pool: ThreadPoolExecutor, now: float) -> None:
        """Under the lock: hand out items while there is room and the gate is open."""
        while self.queue and not self.aborted:
            item = self.queue[0]
            if item.index not in self.decided:  # decided once: following claims a task
                self.decided[item.index] = self.resolve(item)
            action, value = self.decided[item.index]
            if action == "reuse":
                self.queue.popleft()
                self._reuse(item, value)
                continue
            if action == "lost":
                self.queue.popleft()
                item.state, item.origin = "lost-unknown", "created"
                item.error = E.OutcomeUnknownError(
                    "An earlier run of this batch sent this request without getting an answer, so a task may "
                    "exist (and be billed). Not resent; check the dashboard, then pass force=True to send it again.")
                self.stats["lost"] += 1
                continue
            if self.in_flight >= self.concurrency:
                return
            if action == "follow":
                self.queue.popleft()
                self._take_slot()
                self._follow(item, value)
                continue
            if now < self.gate_until:
                return
            self.queue.popleft()
            self._take_slot()
            item.origin = "created"
            item.state = "submitting"
            item.started_at = time.time()
            self.stats["create_requests"] += 1
            pool.submit(self._create, item)

    def _take_slot(self) -> None:
        self.in_flight += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.in_flight)

    def _free_slot(self) -> None:
        self.in_flight -= 1
        self.cond.notify_all()

    def _stop_queue(self, why: str) -> None:
        while self.queue:
            item = self.queue.popleft()
            item.state, item.note = "not-submitted", why
            if self.aborted is not None:
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
        assert self.session is not None
        live = self.session.jobs.get(entry.task_id)
        if live is not None and not live.done():
            job = live
        else:
            job = self.client.track(entry.task_id, item.request, created_at=entry.submitted_at)
            self.session.adopt(job)  # its state changes go to the history like any session job
        item.job, item.origin, item.state = job, "followed", "running"
        item.started_at = time.time()
        self.stats["followed"] += 1
        job.add_done_callback(lambda j, item=item: self._job_done(item, j))

    def _create(self, item: BatchItem) -> None:
        """In a pool thread: one createTask; the outcome goes back under the lock."""
        try:  # one createTask attempt: a 429 comes back here, to pause every submission (one shared backoff)
            if self.session is not None:  # recorded before polling, like any session job
                job = self.session.submit(item.request, force=True, source="batch", cell=self.cell,
                                          extra={"batch": {"id": self.bid, "index": item.index}},
                                          retry_rate_limits=False)
            else:
                job = self.client.submit_request(item.request, retry_rate_limits=False)
        except BaseException as err:  # noqa: BLE001 - every outcome must release the slot
            with self.cond:
                self._create_failed(item, err)
            return
        with self.cond:
            self.stats["created"] += 1
            self.consecutive_429 = 0
            item.job, item.state = job, "running"
        job.add_done_callback(lambda j, item=item: self._job_done(item, j))

    def _create_failed(self, item: BatchItem, err: BaseException) -> None:
        self._free_slot()
        now = time.monotonic()
        if isinstance(err, (E.RateLimitError, E.MaintenanceError)) or (
                isinstance(err, E.Imagen4Error) and getattr(err, "not_sent", False)):
            # certainly not created: wait (all of us), then send it again
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
            delay = err.retry_after
            if delay is None:
                delay = min(30.0, 0.5 * 2 ** min(self.consecutive_429, 6)) * random.uniform(0.5, 1.0)
            until = now + min(float(delay), MAX_RETRY_AFTER)
            if until > self.gate_until:
                if self.gate_until <= now:
                    self.stats["pauses"] += 1
                    self.stats["paused_s"] += until - now
                else:
                    self.stats["paused_s"] += until - self.gate_until
                self.gate_until = until
            item.state, item.origin = "pending", None
            self.decided[item.index] = ("create", None)
            if self.closed:  # the run is over (timeout, interrupt): nobody will send it again
                item.state, item.note = "not-submitted", f"not sent: {err.title} after the batch had stopped"
                item.error, item.finished_at = err, time.time()
                return
            self.queue.appendleft(item)
            return
        if isinstance(err, E.OutcomeUnknownError):
            item.state, item.error = "lost-unknown", err
            item.finished_at = time.time()
            self.stats["lost"] += 1
            return
        self._fail(item, err)
        if isinstance(err, ABORTING):
            self.aborted = err
            self._stop_queue(f"not sent: {getattr(err, 'title', 'error')}")
        elif not isinstance(err, Exception):  # KeyboardInterrupt / SystemExit in a worker
            self.aborted = err

    def _fail(self, item: BatchItem, err: BaseException) -> None:
        item.state = "fail" if isinstance(err, E.GenerationFailedError) else "error"
        item.error = err
        item.finished_at = time.time()

    def _job_done(self, item: BatchItem, job: Job) -> None:
        """Poller thread: a followed or created task finished (or its polling gave up)."""
        with self.cond:
            err = job.error
            if (err is not None and err.retryable and not isinstance(err, E.TimeoutError)
                    and item.follows < MAX_FOLLOWS):
                # polling hit a transient error; the task lives on: follow it again (no new task)
                item.follows += 1
                again = self.client.track(job.task_id, item.request, created_at=job.created_at)
                if self.session is not None:
                    self.session.adopt(again)
                item.job = again
                again.add_done_callback(lambda j, item=item: self._job_done(item, j))
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


# -- the public function -----------------------------------------------------------------------------
def generate_many(items: Any, *, session: Session | None = None, client: Imagen4Client | None = None,
                  concurrency: int = 4, force: bool = False, reuse: str | None = None, progress: bool = True,
                  timeout: float | None = None, name: str | None = None, wait: bool = True,
                  **defaults: Any) -> BatchResult:
    """Generate images for many prompts or requests; blocks until all are done and returns a `BatchResult`.

    items: prompts (str), dicts of request fields, GenerationRequests, a pandas Series or DataFrame (its
    `prompt`, `negative_prompt`, `aspect_ratio`, `num_images`, `seed` columns). `defaults` (aspect_ratio=,
    num_images=, seed=, negative_prompt=) apply to str and dict items. All items are validated before
    anything is sent.

    concurrency: tasks in flight at once. One shared backoff: a 429 pauses every submission until its
    Retry-After has passed. A createTask with an unknown outcome is never resent (`lost-unknown`).

    session: history and reuse (default: the notebook's session). Running the same batch again reuses its
    finished tasks and follows its unfinished ones instead of creating new tasks; `reuse` ('seeded',
    'always', 'never') also applies the history's reuse policy to each item; `force=True` creates every
    task anew. `client`: run without a history. `timeout`: stop submitting after this many seconds (running
    tasks go on; `result.wait()`). `name`: identify the batch in the history by name instead of by content.
    `wait=False`: return the result at once and submit from a background thread (the progress display, made
    here, updates in place); `result.wait()` blocks until every item has finished, `result.stop()` stops
    sending.
    """
    global last_batch
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise E.InvalidRequestError(f"concurrency must be a whole number of at least 1, not {concurrency!r}.")
    if timeout is not None and not timeout > 0:
        raise E.InvalidRequestError("timeout must be a positive number of seconds (or None).")
    requests = build_requests(items, **defaults)
    if session is not None and client is not None and session.client is not client:
        raise E.InvalidRequestError("Pass either session= or client=, not both (the session has its own client).")
    if session is None and client is None:
        session = default_session()
    if session is not None:
        from ..records.session import REUSE_POLICIES

        if reuse is not None and reuse not in REUSE_POLICIES:
            raise E.InvalidRequestError(f"reuse must be one of {', '.join(REUSE_POLICIES)}, not {reuse!r}.")
        client = session.client
    assert client is not None
    bid = batch_id(requests, name)
    batch_items = [BatchItem(i, r) for i, r in enumerate(requests)]
    result = BatchResult(batch_items, bid)
    last_batch = result
    if not batch_items:
        return result
    key = (str(session.history.path) if session is not None else id(client), bid)
    with _submitting_lock:
        running = _submitting.get(key)
        if running is not None:  # both would create the same tasks
            raise E.InvalidRequestError("This batch is still being submitted by an earlier run: wait for it "
                                        "(result.wait()) or stop it (result.stop()) first; running it again then "
                                        "resumes it, with no new task for what was sent.")
        _submitting[key] = result
    bar = _Progress(len(batch_items)) if progress else None
    run = _Run(batch_items, session=session, client=client, concurrency=concurrency, force=force, reuse=reuse,
               bid=bid, timeout=timeout, progress=bar)
    result.stats, result._run = run.stats, run
    if not wait:
        result._runner = threading.Thread(target=_run_in_background, args=(run, key, result),
                                          name="imagen4-batch-run", daemon=True)
        result._runner.start()
        return result
    try:
        run.run()
    except KeyboardInterrupt:
        result.stop("not sent: interrupted")
        print(f"imagen4 batch interrupted: {run.in_flight} task(s) still running in the background; "
              "imagen4_jupyter.research.batch.last_batch has the result, and running the same batch again resumes it.",
              file=sys.stderr)
        raise
    finally:
        _done_submitting(key, result)
    return result


def _run_in_background(run: _Run, key: tuple, result: BatchResult) -> None:
    try:
        run.run()
    except BaseException as err:  # noqa: BLE001 - a thread's end: say it in the items, not in stderr
        with run.cond:
            run.aborted = err
            run._stop_queue(f"not sent: the batch stopped ({type(err).__name__}: {err})")
    finally:
        _done_submitting(key, result)


def _done_submitting(key: tuple, result: BatchResult) -> None:
    with _submitting_lock:
        if _submitting.get(key) is result:
            del _submitting[key]
