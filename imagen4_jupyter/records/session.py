"""One session per kernel: history lookup and reuse, submit, resume. Magic and panel both call this.

Front-ends hold no protocol or history logic: they build a GenerationRequest and call `Session.submit`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import TYPE_CHECKING, Any

from ..api import errors as E
from ..api.credentials import Credentials, checked_target, resolve
from ..api.job import Job
from ..api.records import Result
from ..api.request import GenerationRequest
from ..api.schedules import seed_from_history
from ..api.spend import PriceBook
from ..api.store import ImageStore, prepare_thumbnails
from .clients import client_fingerprint, close_when_done
from .entries import TaskEntry, entry_cost, finished_job
from .folder import folder_histories, origin_label, record_reuse
from .history import History
from .location import credentials_start, find_notebook, history_path, unwritable_line, warn_unwritable, where_line
from .policies import REUSE_POLICIES
from .sendlog import queue_hooks, resume_queue
from .simulated import SimulatorMarks, settle_gone
from .spend import PriceProbe, Spending

if TYPE_CHECKING:  # the client (and requests) load with the first task, not with %load_ext
    from ..api.client import Imagen4Client
    from .callback_hub import CallbackHub



class Session:
    """Owns the client, the history and the jobs of one kernel (or one script)."""

    callbacks: CallbackHub | None = None  # the service's callbacks as hints, while `enable_callbacks` is on

    def __init__(self, *, client: Imagen4Client | None = None, history: History | None = None,
                 notebook: str | None = None, history_folder: str | None = None, user_ns: dict | None = None,
                 reuse: str = "seeded", client_options: dict | None = None):
        nb, found_by = find_notebook(user_ns, notebook)
        self.notebook, self.found_by = nb, found_by
        self.history = history or History(history_path(nb, history_folder))
        self.reuse = reuse
        self._client = client
        self._client_options = dict(client_options or {})
        self._own_client = client is None  # a client made here follows the credentials in force (`client`)
        self._client_made_for: tuple[str, str | None] | None = None
        self._client_lock = threading.Lock()
        self._service: Credentials | None = None  # set by `use_service` (the in-kernel simulator)
        self._marks = SimulatorMarks()  # the in-kernel simulator in use, simulated tasks (records/simulated.py)
        self.jobs: dict[str, Job] = {}
        self.spending = Spending(PriceBook())  # this kernel's budget, spend and prices (records/spend.py)
        self.probe = PriceProbe(self.spending.prices, self.history)  # prices from the balance (hpace: + history)
        self.queued: dict[str, Job] = {}  # local id -> a job waiting in the client's send queue (no task id yet)
        self._listeners: list[Callable[[Job], None]] = []
        self._lock = threading.Lock()

    # -- the client, created on first use -----------------------------------------------------
    @property
    def client(self) -> Imagen4Client:
        """The client in force; a session that makes its own rebuilds it when the key or base URL changed."""
        if self._client is None or self._credentials_changed():
            self._rebuild_client()
        return self._client

    def configure_client(self, **options: Any) -> None:
        """Change client options (schedule, timeout ...); the client is rebuilt on next use if needed."""
        self._client_options.update(options)
        client = self._client
        if client is not None:
            if "timeout" in options:
                client.timeout = options["timeout"]
            if "retry" in options:
                client.retry = options["retry"]
            if "schedule" in options:
                client.schedule = options["schedule"]
                seed_from_history(client.schedule, self.history)

    # -- the service and its credentials, resolved again at each use ----------------------------
    def credentials(self) -> Credentials:
        """The key and base URL this session uses now: the simulator's while `use_service` points at it, else
        resolved again (environment, the nearest .env from the notebook's folder upward, a key typed at
        `%imagen4 key`), so a key set after the first failure works on the next call with no restart."""
        if self._service is not None:
            return self._service
        return resolve(start=credentials_start(self.notebook))

    def use_service(self, credentials: Credentials | None, *, simulated: bool = False) -> None:
        """Point the session at other credentials (the in-kernel simulator: `simulated=True`), or back to the
        resolved ones (None). The next use builds a new client; running jobs keep following on the old one."""
        self._service = credentials
        self._marks.in_kernel = bool(simulated and credentials is not None)

    @property
    def simulated(self) -> bool:
        """True while the service in force is a simulator: the in-kernel one, or one that answered as one."""
        client = None if self._credentials_changed() else self._client
        return self._marks.load(self.history).service(client, lambda: self._target()[1])

    def is_simulated(self, task_id: str) -> bool:
        """True for a task made on a simulator, in this kernel or an earlier one (`"simulated": true` events)."""
        return task_id in self._marks.load(self.history).ids

    def _mark_simulated(self, job: Job) -> None:
        if self.simulated:
            self._marks.add(job.task_id, self._client.base_url if self._client else None)

    def _target(self) -> tuple[str, str | None]:
        # hkeys: code's options win; a key and an address from different places need the host trusted
        return checked_target(self.credentials(), self._client_options)

    def _credentials_changed(self) -> bool:
        """True when this session's own client was built for another key or base URL than the ones in force."""
        if not self._own_client or self._client is None:
            return False
        return client_fingerprint(*self._target()) != self._client_made_for

    def _rebuild_client(self) -> None:
        with self._client_lock:
            if self._client is not None and not self._credentials_changed():
                return  # another thread rebuilt it meanwhile
            from ..api.client import Imagen4Client
            key, url = self._target()
            opts = {"cache_dir": self.history.folder / "images", **self._client_options, "api_key": key,
                    "base_url": url}
            old, self._client = self._client, Imagen4Client(**opts)
            self._client.callback_hints = self.callbacks
            self._client_made_for = client_fingerprint(key, url)
            seed_from_history(self._client.schedule, self.history)
        if old is not None:
            close_when_done(old, self.pending())

    @property
    def store(self) -> ImageStore:
        return self.client.store

    def relocate(self, *, notebook: str | None = None, history_folder: str | None = None,
                 user_ns: dict | None = None) -> None:
        """Switch to another history file (the notebook or history folder changed); jobs keep running."""
        nb, found_by = find_notebook(user_ns, notebook)
        self.notebook, self.found_by = nb, found_by
        self.history = History(history_path(nb, history_folder))
        if self._client is not None:
            self._client.store = ImageStore(self.history.folder / "images")

    def where(self) -> str:
        """One line: where the history is kept and why."""
        return where_line(self.history.path, self.found_by)

    # -- listeners (panels, displays) ---------------------------------------------------------
    def subscribe(self, fn: Callable[[Job], None]) -> None:
        """`fn(job)` is called for every new job and every state change of any job of this session."""
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[Job], None]) -> None:
        """Stop calling `fn` (no error if it was not subscribed)."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, job: Job) -> None:
        for fn in list(self._listeners):
            try:
                fn(job)
            except Exception:
                import logging

                logging.getLogger("imagen4_jupyter").exception("session listener failed")

    # -- submitting ---------------------------------------------------------------------------
    def find_reusable(self, request: GenerationRequest, reuse: str | None = None) -> TaskEntry | None:
        """The history's stored result for `request` if the reuse policy (`seeded`, `always`, `never`) allows."""
        policy = reuse or self.reuse
        if policy not in REUSE_POLICIES:
            raise E.InvalidRequestError(f"reuse must be one of {', '.join(REUSE_POLICIES)}, not {policy!r}.")
        if policy == "never" or (policy == "seeded" and request.seed is None):
            return None
        entry = self.history.find_reusable(request)
        # simulated images never stand in for the real service's, nor the other way round
        if entry is not None and self.is_simulated(entry.task_id) == self.simulated:
            return entry
        # a duplicated notebook: the request may have succeeded in another history of the same folder
        return folder_histories(self.history.folder).find_reusable(request, own=self.history.path,
                                                                   simulated=self.simulated)

    def reused_from(self, task_id: str) -> str | None:
        """Where a task reused from another notebook's history came from ("quickstart.ipynb's history")."""
        entry = self.history.get(task_id)
        return origin_label(entry.origin) if entry is not None and entry.origin else None

    def in_flight(self, request: GenerationRequest, reuse: str | None = None) -> Job | None:
        """The live job (queued, being sent, or running) of exactly this request, when the reuse policy would
        reuse its result: an identical request in flight is followed, never sent again (no idempotency key)."""
        policy = reuse or self.reuse
        if policy == "never" or self._client is None:  # no client yet: nothing can be in flight
            return None
        return self._client.in_flight(request)

    def submit(self, request: GenerationRequest, *, force: bool = False, reuse: str | None = None,
               source: str = "api", cell: Any = None, extra: dict | None = None,
               retry_rate_limits: bool = True, queue: bool = True, local_id: str | None = None) -> Job:
        """Reuse a stored result when the policy allows, follow an identical request in flight, else queue a new
        task: recorded (`queued`) before anything can be sent, and refused with a `RecordError` when the history
        cannot be written.

        `extra` adds fields to the `submitted` (or `outcome_unknown`) event, for example `credits_before` or a
        batch tag. `retry_rate_limits=False`: a 429/455 ends the job at once (see `Imagen4Client.submit_request`).
        The Job returns at once (status `pacing`) and the client's sender sends it under the create limit;
        `queue=False` waits in this thread until it has left and been answered (a batch's threads).
        `local_id` resends a queued request that a dead kernel never sent (resume), under its own name.
        """
        if not force:
            entry = self.find_reusable(request, reuse)
            if entry is not None:
                job = self.job_from_history(entry, reused=True)
                self._notify(job)
                return job
            live = self.in_flight(request, reuse)
            if live is not None:
                return live

        credits, measured = self.spending.reserve(request)  # over the budget: refused, nothing sent
        before = self.probe.start(request, self.client.credits, self.client.pacer.others_sent)  # hpace: neighbours
        common = {"request": request.to_dict(), "request_key": request.key(), "cell": cell, "source": source,
                  "cost": {"credits": credits, "measured": measured},
                  **self._marks.fields(self.simulated, self.client), **(extra or {})}

        def ended(job: Job | None, spent: float | None) -> None:
            price = self.probe.end(request, before, self.client.credits,
                                   spent is not None and job is not None and bool(job.task_id))
            self.spending.settle(credits, None if spent is None else price if price is not None else spent,
                                 job.task_id if job is not None else None)
            if price is not None and job is not None:  # measured: only a created task (with its id) teaches it
                job.cost = (price, True)
                try:
                    self.history.append({"event": "cost", "task_id": job.task_id, "credits": price, "measured": True})
                except OSError:
                    pass  # a measured price is a nicety: the estimate stays recorded

        def created(job: Job) -> None:
            job.cost = (credits, measured)
            local = {"local_id": job.local_id} if job.local_id else {}
            try:
                self.history.append({"event": "submitted", "task_id": job.task_id, **common, **local,
                                     **self._marks.fields(self.simulated, self.client)})  # the answer's word
            except OSError as err:  # the task exists and is paid for: follow it and name it, never drop it
                warn_unwritable(self.history.path, err, f"Task {job.task_id} was created and is followed in "
                                    "this kernel only (its `sending` record stands: it is never sent again)")
            with self._lock:
                self.queued.pop(job.local_id or "", None)
            ended(job, credits)  # after `submitted`: a measured price follows it as a `cost` event
            self.adopt(job)

        def end(job: Job, sent: bool) -> None:  # the outcome unknown may have been billed: it counts
            ended(job, credits if sent else None)

        hooks = queue_hooks(self.history, self.queued, self._lock, common, created, on_end=end,
                            unknown_event=lambda ev: ev if self.callbacks is None else  # keeps its token
                            self.callbacks.outcome_unknown(request, ev))
        try:
            job = self.client.submit_request(request, retry_rate_limits=retry_rate_limits, queue=queue,
                                             hooks=hooks, local_id=local_id, follow=False)
        except OSError as err:  # its `queued` record could not be written: nothing was sent
            ended(None, None)
            raise E.RecordError(unwritable_line(self.history.path, err)) from None
        except E.Imagen4Error:
            if not queue:  # it ended before it was created; its end has settled the spending already
                raise
            ended(None, None)
            raise
        if job.cost is None:  # still in the send queue: its estimate until it is created
            job.cost = (credits, measured)
        self._notify(job)
        return job

    def cancel(self, job: Job, why: str = "interrupted") -> bool:
        """Withdraw a job's request if it has not left yet: recorded as cancelled and never sent, now or by a
        later resume. False once it is being sent (its outcome is recorded when the answer comes) or done."""
        client = self._client
        return client is not None and client.cancel(job, why)

    def enable_callbacks(self, public_url: str | None = None, **options: Any) -> CallbackHub:
        """The service's callbacks as hints, reached at `public_url` (records/callback_hub: `listen`, `webhook_key`)."""
        from .callback_hub import CallbackHub
        self.disable_callbacks()
        self.callbacks = CallbackHub(self, public_url, **options)
        self.client.callback_hints = self.callbacks
        return self.callbacks

    def disable_callbacks(self) -> None:
        """Stop the receiver (if any); the tasks it followed are polled at the full rate again."""
        hub, self.callbacks = self.callbacks, None
        hub.stop() if hub is not None else None  # a client still holding it gets no more callback URLs from it

    def adopt(self, job: Job) -> None:
        """Make a job of this session's client (for example from `client.track`) one of the session's jobs:
        its state changes and outcome are written to the history and the listeners hear of it."""
        with self._lock:
            self.jobs[job.task_id] = job
        self._mark_simulated(job)
        job.on_change(self._record_change)
        job.add_done_callback(prepare_thumbnails)  # runs after the cell's display and the history record
        self._notify(job)

    def _record_change(self, job: Job) -> None:
        """A change callback: runs for the final state before the job is done, so waiters see it written. A
        history that cannot be written is said once (a warning), not once per change."""
        try:
            self._write_change(job)
        except OSError as err:
            warn_unwritable(self.history.path, err, f"Task {job.task_id}'s progress is followed in this kernel "
                            "only")
        self._notify(job)

    def _write_change(self, job: Job) -> None:
        if not job.finished:
            self.history.append({"event": "state", "task_id": job.task_id, "state": job.status})
        elif job.error is None:
            rec = job.record
            self.history.append({
                "event": "succeeded", "task_id": job.task_id, "urls": rec.result_urls if rec else [],
                "images": [{**im.to_dict(), "path": self.history.relative(im.path)} for im in job.images],
                "cost_time_ms": rec.cost_time_ms if rec else None,
                "create_time_ms": rec.create_time_ms if rec else None,
                "generating_since_ms": job.generating_since_ms,
                "complete_time_ms": rec.complete_time_ms if rec else None,
                **({"extra_urls": job.extra_urls} if job.extra_urls else {})})  # beyond num_images: not downloaded
        else:
            err = job.error
            self.history.append({"event": "failed", "task_id": job.task_id, "kind": type(err).__name__,
                                 "code": err.code, "message": str(err), "final": err.final,
                                 "fail_code": getattr(err, "fail_code", None)})

    # -- history-backed jobs ------------------------------------------------------------------
    def job_from_history(self, entry: TaskEntry, *, reused: bool = False) -> Job:
        """A finished Job rebuilt from the history (no request sent)."""
        if reused:  # recorded for the spend summary; from another notebook's history, copied into this one (once)
            entry, simulated = record_reuse(self.history, entry)
            if simulated:
                self._marks.load(self.history).add(entry.task_id, None)
        return finished_job(entry, self.history.stored_images(entry) if entry.state == "success" else [],
                            reused=reused)

    def resume(self, entries: Iterable[TaskEntry] | None = None) -> list[Job]:
        """Follow every unfinished task of the history again, or only `entries` (zero createTask requests for
        them). A task this session still follows is left to its live job (`jobs[task_id]`, not in the list).
        Without `entries`, also the requests a dead kernel left in its send queue (`records/sendlog.py`): the
        ones certainly never sent are sent now, the ones that may have been come back failed as outcome
        unknown; none is sent twice."""
        resumed = []
        for entry in settle_gone(self, entries)[0]:  # a simulated task whose simulator is gone: closed, not followed
            live = self.jobs.get(entry.task_id)
            if live is not None and not live.done():
                continue
            job = self.client.track(entry.task_id, entry.generation_request(), created_at=entry.submitted_at)
            job.cost = entry_cost(entry)
            self.adopt(job)
            resumed.append(job)
        if entries is None:  # and what a dead kernel left in its send queue (api/sending.py)
            resumed += resume_queue(self)
        return resumed

    def pending(self) -> list[Job]:
        """Jobs not yet settled: waiting in the send queue, still running, or finished but their outcome not yet
        recorded."""
        with self._lock:
            return [j for j in (*self.queued.values(), *self.jobs.values()) if not j.done()]

    def wait_all(self, timeout: float | None = None) -> list[Job]:
        """Block until every job of this session is done; returns them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pending = self.pending()
            if not pending:
                return list(self.jobs.values())
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                raise E.Imagen4TimeoutError(f"{len(pending)} task(s) still running after {timeout:g} s.")
            futures.wait(pending, remaining)  # then look again: jobs may have been added meanwhile

    def result_of(self, task_id: str) -> Result | None:
        """The Result of a finished, successful task of this session or its history; None otherwise."""
        job = self.jobs.get(task_id)
        if job is None:
            entry = self.history.get(task_id)
            job = self.job_from_history(entry) if entry and entry.state == "success" else None
        return job.wait(0) if job is not None and job.done() and job.error is None else None

    def close(self) -> None:
        """Close the client (its poller stops; see `Imagen4Client.close`) and the callback receiver."""
        self.disable_callbacks()
        if self._client is not None:
            self._client.close()


_current: Session | None = None


def get_session(**kwargs: Any) -> Session:
    """The kernel's session (created on first use). Without `user_ns`, a running IPython's namespace is used,
    so a session made before `%load_ext` (by `Panel()` or `generate_many`) finds the notebook (VS Code's
    `__vsc_ipynb_file__`) as the magic does, and the magic then keeps it."""
    global _current
    if _current is None:
        if kwargs.get("user_ns") is None:
            import sys

            ipython = sys.modules.get("IPython")  # not imported: not running (and not worth importing)
            shell = ipython.get_ipython() if ipython is not None else None
            if shell is not None:
                kwargs["user_ns"] = shell.user_ns
        _current = Session(**kwargs)
    return _current


def set_session(session: Session | None) -> None:
    """Replace the kernel's session (None: the next `get_session()` makes a new one)."""
    global _current
    _current = session


def current_session() -> Session | None:
    """The kernel's session if one was made (by `get_session`, `set_session` or the magic), else None."""
    return _current
