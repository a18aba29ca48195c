"""One session per kernel: history lookup and reuse, submit, resume. Magic and panel both call this.

Front-ends hold no protocol or history logic: they build a GenerationRequest and call `Session.submit`.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

from ..api import errors as E
from ..api.client import Imagen4Client
from ..api.credentials import Credentials, resolve
from ..api.job import Job
from ..api.records import Result, TaskRecord
from ..api.request import GenerationRequest
from ..api.schedules import seed_from_history
from ..api.store import ImageStore
from .folder import folder_histories, origin_label, record_reuse
from .history import History, TaskEntry, find_notebook, history_path

REUSE_POLICIES = ("seeded", "always", "never")


class Session:
    """Owns the client, the history and the jobs of one kernel (or one script)."""

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
        self.simulated = False
        self._simulated_ids: set[str] | None = None
        self.jobs: dict[str, Job] = {}
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
        from pathlib import Path

        return resolve(start=Path(self.notebook).parent if self.notebook else Path.cwd())

    def use_service(self, credentials: Credentials | None, *, simulated: bool = False) -> None:
        """Point the session at other credentials (the in-kernel simulator: `simulated=True`), or back to the
        resolved ones (None). The next use builds a new client; running jobs keep following on the old one."""
        self._service = credentials
        self.simulated = bool(simulated and credentials is not None)

    def is_simulated(self, task_id: str) -> bool:
        """True for a task created on (or followed by) the in-kernel simulator, in this kernel or an earlier one
        (its `submitted` event says `"simulated": true`)."""
        if self._simulated_ids is None:
            self._simulated_ids = {ev.get("task_id") for ev in self.history.iter_events()
                                   if ev.get("event") in ("submitted", "reused") and ev.get("simulated") is True}
        return task_id in self._simulated_ids

    def _mark_simulated(self, job: Job) -> None:
        if self.simulated:
            self.is_simulated(job.task_id)  # load the set first
            if self._simulated_ids is not None:
                self._simulated_ids.add(job.task_id)

    def _target(self) -> tuple[str, str | None]:
        creds = self.credentials()
        return (self._client_options.get("api_key", creds.key), self._client_options.get("base_url", creds.base_url))

    def _credentials_changed(self) -> bool:
        """True when this session's own client was built for another key or base URL than the ones in force."""
        if not self._own_client or self._client is None:
            return False
        return _fingerprint(*self._target()) != self._client_made_for

    def _rebuild_client(self) -> None:
        with self._client_lock:
            if self._client is not None and not self._credentials_changed():
                return  # another thread rebuilt it meanwhile
            key, url = self._target()
            opts = {"cache_dir": self.history.folder / "images", **self._client_options, "api_key": key,
                    "base_url": url}
            old, self._client = self._client, Imagen4Client(**opts)
            self._client_made_for = _fingerprint(key, url)
            seed_from_history(self._client.schedule, self.history)
        if old is not None:
            _close_when_done(old, self.pending())

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
        if self.found_by == "working directory":
            return (f"imagen4 history: {self.history.path} (notebook not detected; set "
                    "%config Imagen4Magics.notebook = 'name.ipynb' to keep one history per notebook)")
        return f"imagen4 history: {self.history.path} (notebook found through {self.found_by})"

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

    def submit(self, request: GenerationRequest, *, force: bool = False, reuse: str | None = None,
               source: str = "api", cell: Any = None, extra: dict | None = None,
               retry_rate_limits: bool = True) -> Job:
        """Reuse a stored result when the policy allows, else create a task (recorded before polling).

        `extra` adds fields to the `submitted` (or `outcome_unknown`) event, for example `credits_before` or a
        batch tag. `retry_rate_limits=False`: one createTask attempt, a 429/455 raises at once (see
        `Imagen4Client.create_task`).
        """
        if not force:
            entry = self.find_reusable(request, reuse)
            if entry is not None:
                job = self.job_from_history(entry, reused=True)
                self._notify(job)
                return job

        common = {"request": request.to_dict(), "request_key": request.key(), "cell": cell, "source": source,
                  **({"simulated": True} if self.simulated else {}), **(extra or {})}

        def created(job: Job) -> None:
            try:
                self.history.append({"event": "submitted", "task_id": job.task_id, **common})
            except OSError as err:  # the task exists and is paid for: follow it and name it, never drop it
                _history_unwritable(self.history.path, err, f"Task {job.task_id} was created and is followed in "
                                    "this kernel only (no reuse or resume for it)")
            self.adopt(job)

        try:
            return self.client.submit_request(request, on_created=created, retry_rate_limits=retry_rate_limits)
        except E.OutcomeUnknownError as err:
            try:
                self.history.append({"event": "outcome_unknown", **common, "message": str(err)})
            except OSError as exc:  # the user must still hear that the outcome is unknown
                _history_unwritable(self.history.path, exc, "The outcome of this createTask is not recorded")
            raise

    def adopt(self, job: Job) -> None:
        """Make a job of this session's client (for example from `client.track`) one of the session's jobs:
        its state changes and outcome are written to the history and the listeners hear of it."""
        with self._lock:
            self.jobs[job.task_id] = job
        self._mark_simulated(job)
        job.on_change(self._record_change)
        job.add_done_callback(_prepare_thumbnails)  # runs after the cell's display and the history record
        self._notify(job)

    def _record_change(self, job: Job) -> None:
        """A change callback: runs for the final state before the job is done, so waiters see it written."""
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
                "complete_time_ms": rec.complete_time_ms if rec else None})
        else:
            err = job.error
            self.history.append({"event": "failed", "task_id": job.task_id, "kind": type(err).__name__,
                                 "code": err.code, "message": str(err), "final": err.final,
                                 "fail_code": getattr(err, "fail_code", None)})
        self._notify(job)

    # -- history-backed jobs ------------------------------------------------------------------
    def job_from_history(self, entry: TaskEntry, *, reused: bool = False) -> Job:
        """A finished Job rebuilt from the history (no request sent)."""
        if reused and entry.origin:  # from another notebook's history: recorded in this one too (once)
            entry, simulated = record_reuse(self.history, entry)
            if simulated and self._simulated_ids is not None:
                self._simulated_ids.add(entry.task_id)
        job = Job(entry.task_id, entry.generation_request(), created_at=entry.submitted_at or time.time())
        job.reused = reused
        if entry.state == "success":
            job.record = TaskRecord(task_id=entry.task_id, state="success", result_urls=list(entry.urls),
                                    cost_time_ms=entry.cost_time_ms)
            job.settle(images=self.history.stored_images(entry))
        elif entry.error is not None:
            cls = getattr(E, entry.error.get("kind") or "", E.Imagen4Error)
            if not (isinstance(cls, type) and issubclass(cls, E.Imagen4Error)):
                cls = E.Imagen4Error
            job.settle(error=cls(entry.error.get("message") or "failed"))
        if entry.finished_at and job.finished:
            job.finished_at = entry.finished_at  # elapsed = how long the task took then, not the time since
        return job

    def resume(self, entries: Iterable[TaskEntry] | None = None) -> list[Job]:
        """Follow every unfinished task of the history again, or only `entries` (zero createTask requests).
        A task this session still follows is left to its live job (`jobs[task_id]`, not in the list)."""
        resumed = []
        for entry in self.history.unfinished() if entries is None else entries:
            live = self.jobs.get(entry.task_id)
            if live is not None and not live.done():
                continue
            job = self.client.track(entry.task_id, entry.generation_request(), created_at=entry.submitted_at)
            self.adopt(job)
            resumed.append(job)
        return resumed

    def pending(self) -> list[Job]:
        """Jobs not yet settled: still running, or finished but their outcome not yet recorded."""
        with self._lock:
            return [j for j in self.jobs.values() if not j.done()]

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
        """Close the client (its poller stops; see `Imagen4Client.close`)."""
        if self._client is not None:
            self._client.close()


def _fingerprint(key: str, base_url: str | None) -> tuple[str, str | None]:
    """What a client was built for, without keeping another copy of the key: its hash and the base URL."""
    import hashlib

    return hashlib.sha256((key or "").encode()).hexdigest(), base_url


def _close_when_done(client: Imagen4Client, jobs: list[Job]) -> None:
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


def _prepare_thumbnails(job: Job) -> None:
    """Make the history table's thumbnails now, in the poller thread, so `%imagen4 history` reads small cached
    files instead of decoding full images (~20 ms each) while the user waits."""
    from ..api.store import thumbnail

    for image in job.images:
        try:
            thumbnail(image.path)
        except Exception:  # only a cache: the table makes it itself if this failed
            pass


def _history_unwritable(path: Any, err: OSError, what: str) -> None:
    import warnings

    warnings.warn(f"imagen4: the history {path} could not be written ({type(err).__name__}: "
                  f"{err.strerror or err}). {what}; check the history folder.", RuntimeWarning, stacklevel=5)


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
