"""The live outputs of `%%imagen4` cells: one `CellView` per task (a status card and one slot per image),
the `Ticker` that refreshes elapsed times, and `LiveViews`, which the magic owns: it tracks the views,
blocks a cell until its images are rendered, and shows finished jobs and messages.

Views are created on the kernel thread (`display(..., display_id=True)`) and updated in place from the
poller thread, so images land in the cell that asked for them. The one done signal is the job's own: it
completes only after its change callbacks ran (the history's final event, and a view's final rendering).
"""
from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from IPython.display import display

from ..api import cards as C
from ..api import errors as E
from ..api.spend import cost_text
from . import outputs as D

if TYPE_CHECKING:
    from ..api.job import Job
    from ..records.session import Session

MAX_REFRESHES_PER_SECOND = 20  # elapsed-time updates of all live cards together, whatever their number


class Host(Protocol):
    """What `LiveViews` reads from the magic that owns it."""

    embed: str
    preview_size: int
    timeout: float
    refresh_interval: float

    @property
    def session(self) -> Session: ...

    def rich(self) -> bool: ...


def ended(job: Job) -> bool:
    """True once the job's outcome is known: also inside its final change callbacks, before the future
    reports done (a `success` status alone can come before the images are downloaded)."""
    return job.finished


def settled(job: Job, timeout: float | None) -> bool:
    """Wait until `job` is done (its history record and display updates included); False on timeout."""
    done, _ = concurrent.futures.wait([job], timeout)
    return bool(done)


class CellView:
    """The outputs of one task in the cell that showed it: a status card and one slot per image.

    Created on the kernel thread; updated from the poller thread by display id. When the cell blocks
    (`deferred`), the final rendering is left to the kernel thread so it lands before the cell ends.
    """

    def __init__(self, owner: LiveViews, job: Job, *, rich: bool, embed: str, preview_size: int,
                 deferred: bool, note: str = ""):
        self.owner, self.job, self.rich = owner, job, rich
        self.note = note  # shown on the card for the whole life of the view (e.g. "follows …")
        self.embed, self.preview_size = embed, preview_size
        self.deferred = deferred
        self.finalized = False
        self.card: Any = None
        self.slots: list[Any] = []
        self._lock = threading.RLock()
        self._last_line = ""
        self._last_card: dict | None = None

    @property
    def simulated(self) -> bool:
        """Made by a simulator (asked each time: a queued job has its task id only once it is created)."""
        session = self.owner.host.session
        return session.simulated if self.job.task_id is None else session.is_simulated(self.job.task_id)

    # -- kernel thread ------------------------------------------------------------------------
    def open(self) -> CellView:
        expected = self.job.request.num_images if self.job.request else 1
        if self.rich:
            self._last_card = self.card_bundle()
            key = self.display_key()  # stable per request: a later view of it (resume, show) updates this one too
            self.card = display(self._last_card, raw=True, display_id=key)
            self.slots = [display(C.slot_bundle(), raw=True, display_id=f"{key}-image-{i}") for i in range(expected)]
        else:
            self._print_state()
        self.owner._track_view(self)
        self.job.on_change(self._changed)  # the final change renders before the job reports done
        self.job.add_done_callback(self._changed)  # in case it finished while we subscribed
        self._changed(self.job)  # it may have moved on before we subscribed
        return self

    def release(self, *, error_raised: bool = False) -> bool:
        """Kernel thread, after blocking: stop deferring, render now if the job has finished (True then)."""
        with self._lock:
            self.deferred = False
            if ended(self.job):
                self.finalize(error_raised=error_raised)
            return self.finalized

    # -- poller thread (and ticker) ------------------------------------------------------------
    def _changed(self, job: Job) -> None:
        with self._lock:
            if self.finalized:
                return
            if ended(job):
                if not self.deferred:
                    self.finalize()
                    if self.rich:  # the final card and the image slots: counted against the refreshes' share
                        self.owner.ticker.sent(1 + len(self.slots))
                return
            if self.refresh():
                self.owner.ticker.sent(1)

    def refresh(self) -> bool:
        """Show the current state and elapsed time (live cards only); True if an update was sent."""
        with self._lock:
            if self.finalized:
                return False
            if self.rich:
                bundle = self.card_bundle()
                if bundle != self._last_card:
                    self._last_card = bundle
                    self.card.update(bundle, raw=True)
                    return True
            else:
                self._print_state()
            return False

    def finalize(self, *, error_raised: bool = False) -> None:
        """Turn the card into the final state and fill the image slots (once). `error_raised`: the caller
        raises the job's error (a blocking cell), so text mode does not print it as well."""
        with self._lock:
            if self.finalized:
                return
            self.finalized = True
            try:
                self._render_rich() if self.rich else self.render_text(show_error=not error_raised)
            finally:
                self.owner._untrack_view(self)

    def _render_rich(self) -> None:
        job = self.job
        images = job.images
        note = ""
        if job.error is None and len(images) > len(self.slots):  # the service sent more than asked for
            note = f"{len(images) - len(self.slots)} more image(s): %imagen4 show {job.task_id}"
        problems = []
        if job.error is None:
            base = self.owner.output_base()
            for slot, image in zip(self.slots, images, strict=False):
                try:
                    data, meta = D.image_output(job, image, self.embed, self.preview_size, base=base,
                                                simulated=self.simulated)
                except Exception as exc:  # a damaged file must not hide the others
                    problems.append(f"image {image.index + 1} could not be shown ({exc}); "
                                    f"file: {C.shown_path(image.path, base)}")
                    continue
                slot.update(data, raw=True, metadata=meta)
        for slot in self.slots[len(images) if job.error is None else 0:]:
            slot.update({"text/plain": ""}, raw=True)
        self.card.update(self.card_bundle(note="; ".join(problems + ([note] if note else []))), raw=True)

    def display_key(self) -> str:
        """The display id of this request's card (its image slots add `-image-N`): derived from the request's
        local id (the history keeps it with the task id), else the task id, so `%imagen4 resume` after a restart,
        or `%imagen4 show`, updates the old cell's card in place where the front-end still knows that id."""
        job = self.job
        local = job.local_id
        if local is None and job.task_id:
            try:
                entry = self.owner.host.session.history.tasks.get(job.task_id)
            except Exception:  # no history yet: the task id names it
                entry = None
            local = getattr(entry, "local_id", None)
        return f"imagen4-{local or job.task_id or id(job)}"

    def card_bundle(self, note: str = "") -> dict[str, str]:
        """The job's status card; a simulated task's says so."""
        note = "; ".join(n for n in (self.note, note) if n)
        return C.card_bundle(self.job, note=note, simulated=self.simulated)

    def _print_state(self) -> None:
        line = f"[imagen4] {self.job.task_id}: {self.job.status}" + (" (simulated)" if self.simulated else "")
        if line != self._last_line:
            self._last_line = line
            print(line, flush=True)

    def render_text(self, show_error: bool = True) -> None:
        """The job's outcome as text lines: its error (stderr), or the saved files."""
        job = self.job
        if job.error is not None:
            if not show_error:
                return
            print(f"[imagen4] {job.error.short() if isinstance(job.error, E.Imagen4Error) else job.error}",
                  file=sys.stderr, flush=True)
            return
        cost = cost_text(job.cost)  # `~6 credits`: an estimate; "" for no price
        what = ("reused (no request sent, 0 credits)" if job.reused else  # not its old time
                f"done in {job.elapsed:.1f} s" + (f", {cost}" if cost else ""))
        print(f"[imagen4] {job.task_id}: {what}{' (simulated)' if self.simulated else ''}; saved:", flush=True)
        base = self.owner.output_base()
        for image in job.images:
            print(f"  {C.shown_path(image.path, base)}  ({image.width}×{image.height})", flush=True)


class Ticker:
    """Refreshes the elapsed time of live cards every `refresh_interval` seconds, on the client's poller
    threads (`Poller.call_later`: no thread of its own); it stops when no live card is left.

    All cards together send at most MAX_REFRESHES_PER_SECOND updates a second: with more live cards than
    that, each tick refreshes the ones refreshed longest ago (a rotating share), so 100 tasks in flight cost
    ~20 output messages a second, not 100. State changes do not wait for the ticker: they go out at once, and
    the ticker's next share is smaller by what they sent (`sent`), so refreshes and state changes together
    stay within the bound unless the state changes alone need more.
    """

    def __init__(self, owner: LiveViews):
        self.owner = owner
        self._lock = threading.Lock()
        self._scheduled = False
        self._stopped = False
        self._refreshed: dict[CellView, float] = {}  # live view -> when the ticker last refreshed it
        self._state_updates = 0  # output updates that state changes sent since the last tick

    @property
    def scheduled(self) -> bool:
        """True while a refresh is scheduled (some live card is left)."""
        return self._scheduled

    def interval(self) -> float:
        return max(0.1, self.owner.host.refresh_interval)

    def ensure(self) -> None:
        if self.owner.host.refresh_interval <= 0:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled, self._stopped = True, False
        self._schedule()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def _schedule(self) -> None:
        try:
            self.owner.host.session.client.poller.call_later(self.interval(), self._tick)
        except Exception:  # no client (no key, say): the cards still change with each state
            with self._lock:
                self._scheduled = False

    def sent(self, updates: int) -> None:
        """State changes sent `updates` output updates (any thread): the next tick refreshes that many fewer."""
        with self._lock:
            self._state_updates += updates

    def due(self, views: list[CellView]) -> list[CellView]:
        """This tick's share of the live rich cards: the ones refreshed longest ago, at most the budget less
        what state changes sent since the last tick."""
        rich = [v for v in views if v.rich]
        now = time.monotonic()
        with self._lock:
            budget = max(0, int(MAX_REFRESHES_PER_SECOND * self.interval()) - self._state_updates)
            self._state_updates = 0
            last = {v: self._refreshed.get(v, 0.0) for v in rich}  # finished views are forgotten
            chosen = sorted(rich, key=last.__getitem__)[:budget]
            last.update((v, now) for v in chosen)
            self._refreshed = last
        return chosen

    def _tick(self) -> None:
        with self._lock:  # a view added after this check calls ensure(), which then schedules again
            views = [] if self._stopped else self.owner.live()
            if not views:
                self._scheduled = False
                self._refreshed = {}
                return
        for view in self.due(views):
            try:
                view.refresh()
            except Exception:  # a display problem must not end the ticker
                pass
        self._schedule()


class LiveViews:
    """The cells' live views and the waiting that goes with them; owned by the magic (`host`), whose traits
    `embed`, `preview_size`, `timeout`, `refresh_interval`, `rich()` and `session` it reads."""

    def __init__(self, host: Host):
        self.host = host
        self._views: set[CellView] = set()
        self._views_lock = threading.Lock()
        self.ticker = Ticker(self)

    # -- views ---------------------------------------------------------------------------------
    def _track_view(self, view: CellView) -> None:
        with self._views_lock:
            self._views.add(view)
        self.ticker.ensure()

    def _untrack_view(self, view: CellView) -> None:
        with self._views_lock:
            self._views.discard(view)

    def live(self) -> list[CellView]:
        """The views not rendered in their final state yet."""
        with self._views_lock:
            return list(self._views)

    def open(self, job: Job, *, embed: str | None = None, deferred: bool = False, note: str = "") -> CellView:
        """Show `job` in the running cell (a live card and image slots, or status lines); `deferred`: the
        final rendering waits for `block_on`, on the kernel thread; `note`: a line the card keeps."""
        return self.view(job, embed=embed, deferred=deferred, note=note).open()

    def view(self, job: Job, *, embed: str | None = None, deferred: bool = False, note: str = "") -> CellView:
        host = self.host
        return CellView(self, job, rich=host.rich(), embed=embed or host.embed, preview_size=host.preview_size,
                        deferred=deferred, note=note)

    def follow(self, jobs: list[Job], blocking: bool) -> None:
        """Show running jobs in this cell; `blocking`: wait here until their images are in it."""
        views = [self.open(job, deferred=blocking) for job in jobs]
        if blocking:
            self.block_on(views)

    def block_on(self, views: list[CellView], *, raises: bool = False) -> list[Job]:
        """Wait on the kernel thread until the views' jobs are done, then render them here, so the images are
        in this cell's outputs before it ends. `raises`: the caller raises the error of a job finished here
        (text mode then leaves the message to it)."""
        limit = self.host.timeout + 60.0
        deadline = time.monotonic() + limit
        interrupted = False
        try:
            for view in views:
                settled(view.job, max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            interrupted = True
        withdrawn = self.withdraw([v.job for v in views]) if interrupted else []
        unfinished = [v.job for v in views if not v.release(error_raised=raises)]
        self.say_unfinished(unfinished, "Interrupted" if interrupted else f"Still running after {limit:g} s")
        if withdrawn:
            self.say(f"Interrupted: {len(withdrawn)} request(s) still waiting to be sent were withdrawn; nothing "
                     "was sent for them and nothing will be.")
        return [v.job for v in views]

    def withdraw(self, jobs: list[Job]) -> list[Job]:
        """After an interrupt: withdraw the requests still waiting to be sent (never sent, now or later); the
        ones withdrawn."""
        return [job for job in jobs if self.host.session.cancel(job)]

    def say_unfinished(self, jobs: list[Job], why: str) -> None:
        """One line about jobs a cell stopped waiting for: requests on their way (their outcome is recorded when
        the answer comes) and tasks still running (their images will appear)."""
        jobs = [j for j in jobs if not j.finished]
        sending = [j for j in jobs if j.task_id is None]
        ids = ", ".join(j.task_id for j in jobs if j.task_id is not None)
        if sending:
            self.say(f"{why}: {len(sending)} request(s) were already on their way to the service; each one's "
                     "outcome is recorded when the answer comes, and none is sent again.")
        if ids:
            self.say_until(f"{why}: stopped waiting for {ids}. The task continues in the background and its "
                           "images will appear here; %imagen4 wait blocks again.", jobs)

    def stop(self) -> None:
        """No more elapsed-time refreshes (the extension is unloaded); cards still change with each state."""
        self.ticker.stop()

    # -- one-off outputs -----------------------------------------------------------------------
    def output_base(self) -> Path:
        """The folder that image paths in outputs are relative to: the notebook's, else the working directory
        (where Jupyter starts a notebook's kernel)."""
        notebook = self.host.session.notebook
        return Path(notebook).parent if notebook else Path.cwd()

    def say(self, text: str, kind: str = "info") -> None:
        """A one-line message in the cell (stderr in text mode for errors)."""
        if self.host.rich():
            display(C.message_bundle(text, kind), raw=True)
        else:
            print(f"[imagen4] {text}", file=sys.stderr if kind == "error" else sys.stdout, flush=True)

    def say_until(self, text: str, jobs: list[Job]) -> None:
        """`say` a note that holds only while `jobs` run: once they are all done (their images are in the cell),
        the note is removed (rich outputs; a text line cannot be taken back)."""
        if not self.host.rich():
            return self.say(text)
        handle = display(C.message_bundle(text), raw=True, display_id=True)
        left = {id(job) for job in jobs}
        lock = threading.Lock()

        def finished(job: Job) -> None:
            with lock:
                left.discard(id(job))
                if left:
                    return
            handle.update({"text/plain": ""}, raw=True)  # the note no longer applies
        for job in jobs:
            job.add_done_callback(finished)

    def show_finished(self, job: Job, embed: str, note: str = "") -> None:
        """A finished job's card (or reuse line) and its images, displayed now (kernel thread)."""
        simulated = self.host.session.is_simulated(job.task_id)
        origin = self.host.session.reused_from(job.task_id) if note == "reused" else None
        card = (C.reused_bundle(job, job.created_at, origin, simulated=simulated) if note == "reused"
                else C.card_bundle(job, simulated=simulated))
        if not self.host.rich():
            if note == "reused":
                print(card["text/plain"], flush=True)
            self.view(job, embed=embed).render_text()
            return
        display(card, raw=True)
        base = self.output_base()
        for image in job.images:
            data, meta = D.image_output(job, image, embed, self.host.preview_size, base=base, simulated=simulated)
            display(data, raw=True, metadata=meta)
