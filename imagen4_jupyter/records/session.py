"""One session per kernel: history lookup and reuse, submit, resume. Magic and panel both call this.

Front-ends hold no protocol or history logic: they build a GenerationRequest and call `Session.submit`.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..api import errors as E
from ..api.credentials import Credentials, checked_target, resolve
from ..api.job import Job, Ledger, Stage, status_of
from ..api.request import GenerationRequest
from ..api.schedules import seed_from_history
from ..api.spend import PriceBook
from ..api.store import ImageStore, prepare_thumbnails
from .entries import TaskEntry, entry_cost, finished_job
from .folder import folder_histories, origin_label, record_reuse
from .history import History
from .location import credentials_start, find_notebook, history_path, unwritable_line, warn_unwritable, where_line
from .policies import REUSE_POLICIES
from .sendlog import NOT_RECORDED, owner_fields, resume_queue
from .simulated import SimulatorMarks, settle_gone
from .spend import PriceProbe, Spending

if TYPE_CHECKING:  # the client (and requests) load with the first task, not with %load_ext
    from ..api.client import Imagen4Client
    from .callback_hub import CallbackHub


# -- the session's clients: what one was built for (a hash of the key, never the key), closing a replaced one ---
def client_fingerprint(key: str, base_url: str | None) -> tuple[str, str | None]:
    """What a client was built for, without keeping another copy of the key: its hash and the base URL."""
    return hashlib.sha256((key or "").encode()).hexdigest(), base_url


def close_when_done(client: Imagen4Client, jobs: list[Job]) -> None:
    """Close a replaced client once the jobs it still follows are done (they keep its poller until then)."""
    left = {id(j) for j in jobs}
    lock = threading.Lock()

    def close() -> None:
        threading.Thread(target=client.close, name="imagen4-close-client", daemon=True).start()  # not the poller's

    def one_done(job: Job) -> None:
        with lock:
            left.discard(id(job))
            last = not left
        if last:
            close()

    if not left:
        close()
    for job in jobs:
        job.add_done_callback(one_done)


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
        self._in_force: Credentials | None = None  # resolved once per cell, panel action or batch (`begin`)
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
        assert self._client is not None  # made by _rebuild_client
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
    def begin(self) -> None:
        """A new cell, panel action or batch: the key and base URL in force are read again once, at their next
        use (the environment, the nearest .env, a key typed at `%imagen4 key`); between two `begin`s reading
        `client` or `credentials()` does no I/O."""
        self._in_force = None

    def credentials(self) -> Credentials:
        """The key and base URL this session uses now: the simulator's while `use_service` points at it, else the
        ones resolved since the last `begin` (environment, the nearest .env from the notebook's folder up to the
        project root, a key typed at `%imagen4 key`), so a key set after the first failure works on the next
        cell with no restart."""
        if self._service is not None:
            return self._service
        in_force = self._in_force
        if in_force is None:
            in_force = self._in_force = resolve(start=credentials_start(self.notebook))
        return in_force

    def use_service(self, credentials: Credentials | None, *, simulated: bool = False) -> None:
        """Point the session at other credentials (the in-kernel simulator: `simulated=True`), or back to the
        resolved ones (None). The next use builds a new client; running jobs keep following on the old one."""
        self._service = credentials
        self._in_force = None
        self._marks.in_kernel = bool(simulated and credentials is not None)

    @property
    def simulated(self) -> bool:
        """True while the service in force is a simulator: the in-kernel one, or one that answered as one."""
        try:
            client = None if self._credentials_changed() else self._client
        except E.Imagen4Error:  # an address not trusted yet: no client of it
            client = None
        return self._marks.load(self.history).service(
            client, lambda: self._client_options.get("base_url", self.credentials().base_url))  # not checked:
        # asking whether an address is a simulator's sends nothing to it

    def is_simulated(self, task_id: str | None) -> bool:
        """True for a task made on a simulator, in this kernel or an earlier one (`"simulated": true` events);
        False for a request without a task yet."""
        return task_id in self._marks.load(self.history).ids

    def marks_fields(self) -> dict[str, Any]:
        """What a `submitted` event says about a simulator (from the client's word on its last answer)."""
        return self._marks.fields(self.simulated, self.client)

    def _mark_simulated(self, job: Job) -> None:
        if self.simulated:
            self._marks.add(job.task_id, self._client.base_url if self._client else None)

    def _target(self) -> tuple[str, str | None]:
        """The key and base URL to build a client for: code's options win; a key and an address from different
        places need the host trusted (a ConfigurationError until then)."""
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

    def reused_from(self, task_id: str | None) -> str | None:
        """Where a task reused from another notebook's history came from ("quickstart.ipynb's history")."""
        entry = self.history.get(task_id) if task_id is not None else None
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
        charge = Charge(self, request, credits, measured, self.probe.start(  # neighbours' spending: no price
            request, self.client.credits, self.client.pacer.others_sent))
        common = {"request": request.to_dict(), "request_key": request.key(), "cell": cell, "source": source,
                  "cost": {"credits": credits, "measured": measured},
                  **self._marks.fields(self.simulated, self.client), **(extra or {})}
        ledger = HistoryLedger(self, common, charge)
        try:
            job = self.client.submit_request(request, retry_rate_limits=retry_rate_limits, queue=queue,
                                             ledger=ledger, local_id=local_id, follow=False)
        except OSError as err:  # its `queued` record could not be written: nothing was sent
            charge.settle(None, billed=False)
            raise E.RecordError(unwritable_line(self.history.path, err)) from None
        except E.Imagen4Error:
            charge.settle(None, billed=False)  # (a no-op when its life's end settled it already)
            raise
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
        """Make a job one of the session's jobs (its life's moves are its ledger's to write): registered by task
        id, its thumbnails prepared once done, and the listeners told."""
        assert job.task_id is not None  # an adopted job was created: the service named its task
        with self._lock:
            self.jobs[job.task_id or ""] = job
            self.queued.pop(job.local_id or "", None)
        self._mark_simulated(job)
        job.add_done_callback(prepare_thumbnails)  # runs after the cell's display and the history record
        self._notify(job)

    def follow(self, task_id: str, request: GenerationRequest | None, *, created_at: float | None = None,
               cost: tuple[float, bool] | None = None) -> Job:
        """Follow an existing task (creates nothing): a job of this session whose moves are written to the
        history from here on."""
        ledger = HistoryLedger(self, {})
        job = self.client.track(task_id, request, created_at=created_at, ledger=ledger)
        ledger.price(job, cost)
        self.adopt(job)
        return job

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
            resumed.append(self.follow(entry.task_id, entry.generation_request(), created_at=entry.submitted_at,
                                       cost=entry_cost(entry)))
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

    def close(self) -> None:
        """Close the client (its poller stops; see `Imagen4Client.close`) and the callback receiver."""
        self.disable_callbacks()
        if self._client is not None:
            self._client.close()


@dataclass
class Charge:
    """What one request reserved of the kernel's budget: settled once, when its task exists (billed) or its life
    ended without one (billed only when the outcome is unknown: it may have been). A price measured from the
    balance around it replaces the estimate (a `cost` event)."""

    session: Session
    request: GenerationRequest
    credits: float
    measured: bool
    before: Any  # the balance the price probe read before sending (records/spend.PriceProbe)
    settled: bool = False

    def settle(self, job: Job | None, *, billed: bool) -> None:
        if self.settled:
            return
        self.settled = True
        session = self.session
        task_id = job.task_id if job is not None else None
        price = session.probe.end(self.request, self.before, session.client.credits, billed and task_id is not None)
        session.spending.settle(self.credits, (price if price is not None else self.credits) if billed else None,
                                task_id)
        if price is not None and job is not None:  # measured: only a created task (with its id) teaches it
            job.ledger.price(job, (price, True))
            try:
                session.history.append({"event": "cost", "task_id": task_id, "credits": price, "measured": True})
            except OSError:
                pass  # a measured price is a nicety: the estimate stays recorded


class HistoryLedger(Ledger):
    """The session's ledger of one request (or one task followed again): every move of its life written to the
    notebook's history before it is applied. `queued` and `sending` are written ahead or not at all (the request
    is then refused, or not sent); a later step that cannot be written is said once and the life goes on (a paid
    task is never dropped). `common` are the request's fields (request, key, cell, source, cost, batch tag...)."""

    def __init__(self, session: Session, common: dict[str, Any], charge: Charge | None = None):
        self.session, self.common, self.charge = session, common, charge

    def write(self, job: Job, stage: Stage, facts: dict[str, Any]) -> None:
        history = self.session.history
        local = {"local_id": job.local_id} if job.local_id else {}
        error = facts.get("error")
        if stage == "queued":
            event = {"event": "queued", **local, **self.common, "pid": os.getpid(), "host": socket.gethostname(),
                     **owner_fields(history)}  # whose lease holds it (records/lease.py)
            if job.stage == "sending":  # waiting again after an answer that created nothing (a 429): best effort
                try:
                    history.append(event)
                except OSError as err:
                    self.unwritten(job, stage, err)
                return
            history.append(event)
            if "owner" not in event:  # the request is recorded, but not whose it is
                warn_unwritable(history.folder, OSError("the lease file could not be written"), "This kernel's "
                                "lease is not written (its queued requests are never sent by another kernel's resume)")
        elif stage == "sending":
            history.append({"event": "sending", **local})
        elif stage == "created":
            marks = self.session.marks_fields()  # the createTask answer's word on "simulated"
            history.append({"event": "submitted", "task_id": facts["task_id"], **self.common, **local, **marks})
            if marks:  # known as simulated before anyone can read the task id (a card's refresh, say)
                self.session._marks.add(facts["task_id"], marks.get("simulator"))
        elif stage in ("waiting", "generating"):
            history.append({"event": "state", "task_id": job.task_id,
                            "state": status_of(stage, facts.get("record") or job.record)})
        elif stage == "succeeded":
            rec = job.record
            images = facts.get("images") or []
            history.append({
                "event": "succeeded", "task_id": job.task_id, "urls": rec.result_urls if rec else [],
                "images": [{**im.to_dict(), "path": history.relative(im.path)} for im in images],
                "cost_time_ms": rec.cost_time_ms if rec else None,
                "create_time_ms": rec.create_time_ms if rec else None,
                "generating_since_ms": job.generating_since_ms,
                "complete_time_ms": rec.complete_time_ms if rec else None,
                **({"extra_urls": facts["extra_urls"]} if facts.get("extra_urls") else {})})  # not downloaded
        elif stage == "failed":
            history.append({"event": "failed", "task_id": job.task_id, "kind": type(error).__name__,
                            "code": getattr(error, "code", None), "message": str(error),
                            "final": getattr(error, "final", False), "fail_code": getattr(error, "fail_code", None)})
        elif stage == "outcome_unknown":
            event = {"event": "outcome_unknown", **self.common, "message": str(error)}
            hub = self.session.callbacks
            history.append({**(hub.outcome_unknown(job.request, event) if hub is not None and job.request else event),
                            **local})  # a callback's token may still name the task
        elif stage == "not_sent":
            history.append({"event": "not_sent", "kind": type(error).__name__, "code": getattr(error, "code", None),
                            "message": str(error), **local})
        elif stage == "cancelled":
            history.append({"event": "cancelled", "message": "withdrawn before it was sent", **local})

    def applied(self, job: Job, stage: Stage) -> None:
        session = self.session
        if stage == "queued":
            with session._lock:
                session.queued[job.local_id or ""] = job
            if self.charge is not None and job.cost is None:  # its estimate until a price is measured
                self.price(job, (self.charge.credits, self.charge.measured))
        elif stage == "created":
            if self.charge is not None:
                self.charge.settle(job, billed=True)  # after `submitted`: a measured price follows as `cost`
            session.adopt(job)
            return  # adopt told the listeners
        elif stage in ("outcome_unknown", "not_sent", "cancelled"):
            with session._lock:
                session.queued.pop(job.local_id or "", None)
            if self.charge is not None:  # the outcome unknown may have been billed: it counts
                self.charge.settle(job, billed=stage == "outcome_unknown")
        session._notify(job)

    def unwritten(self, job: Job, stage: Stage, err: OSError) -> None:
        what = {"created": f"Task {job.task_id} was created and is followed in this kernel only (its `sending` "
                           "record stands: it is never sent again)"}.get(stage) or NOT_RECORDED.get(stage) or (
            f"Task {job.task_id}'s progress ({stage}) is followed in this kernel only")
        warn_unwritable(self.session.history.path, err, what)


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
