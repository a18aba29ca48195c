"""The ipywidgets panel: a thin view over the kernel's `Session` (same jobs and history as `%%imagen4`).

A few small widgets composed: the controls (`controls.py`) build a `GenerationRequest`, which the panel hands
to `Session.submit` on the client's poller workers (the kernel stays free); a listener on the session feeds
the task list (`tasks.py`) and the gallery (`gallery.py`); the history tab (`history_tab.py`) shows the
`%imagen4 history` table; "Insert as code" (`insert.py`) writes the equivalent `%%imagen4` cell below the
panel's cell; without an API key a banner (`keybanner.py`) turns Generate off and offers `%imagen4 key` or the
simulator. No threads of its own, and no protocol or history logic here.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W

from ...api.cards import esc
from ...api.errors import Imagen4Error, InvalidRequestError
from ...api.job import Job
from ...api.request import GenerationRequest
from ...api.spend import cost_text, format_credits
from ...api.store import StoredImage
from ...records.history import TaskEntry
from ...records.session import Session, get_session
from .controls import Controls
from .gallery import Gallery
from .history_tab import HistoryTab
from .insert import InsertAsCode, cell_code, code_problem
from .keybanner import KEY_CELL, KeyBanner
from .style import style_html
from .tasks import TaskList, expected_generation

__all__ = ["Panel", "cell_code", "code_problem"]

HISTORY_TAB = 1
DEBOUNCE = 1.0  # seconds: a second click on Generate this soon, with the controls unchanged, is a double click


KEY_RECHECK = 2.0  # seconds between looks for a key while the missing-key banner shows


class Panel(W.VBox):
    """Explore Imagen 4 with controls; tasks, images and history are the kernel session's (shared with %%imagen4).

    `Panel()` uses the kernel's session; `Panel(session=...)` another one (tests).
    Seeds: an empty seed box means a new random seed is chosen and sent with each Generate (so every task
    can be reproduced and "Insert as code" gives a cell that shows the same images); a seed typed in the box
    (or filled by "random") stays for every Generate until the user changes it. A double click on Generate
    (a second click within `DEBOUNCE` seconds, the controls unchanged) sends one task.
    """

    def __init__(self, session: Session | None = None, *, thumb_size: int = 200, history_limit: int = 20):
        self.session = session or get_session()
        self.submissions: list[dict] = []  # every Generate of this panel, oldest first
        self._closed = False
        self._key_watch = False  # a look for a key is scheduled (`_watch_key`)
        self._lock = threading.Lock()
        self._submitting: set[int] = set()  # threads inside session.submit for this panel (its listener calls
        # come from there, so a job is known to be the panel's from its first row)
        self._last_click: tuple[float, tuple] | None = None  # when Generate last sent, and the controls then
        self.controls = Controls()
        self.controls.cost_of = self.cost_line
        self.tasks = TaskList(self._later, lambda job: expected_generation(self.session.client.schedule, job),
                              simulated=self.session.is_simulated)
        self.gallery = Gallery(thumb_size)
        self.history_tab = HistoryTab(self.session, self._later, limit=history_limit)
        self.inserter = InsertAsCode(self._later)
        self.banner = KeyBanner(self.session, lambda: self.inserter.insert_text(KEY_CELL, ""),
                                self._start_simulator)
        self.banner.on_change = self.check_key
        self.tabs = W.Tab(children=[self.gallery, self.history_tab], titles=("Gallery", "History"))
        self.tabs.add_class("imagen4-tabs")
        style = W.HTML(style_html(), layout=W.Layout(display="none"))
        super().__init__([style, self.banner, self.controls, self.inserter, self.tasks, self.tabs],
                         layout=W.Layout(width="100%"))
        self.add_class("imagen4-panel")
        # the controls' widgets, as attributes of the panel (scripts and tests set their values)
        c = self.controls
        self.prompt, self.negative, self.ratio, self.num, self.seed = c.prompt, c.negative, c.ratio, c.num, c.seed
        self.model, self.generate, self.insert, self.reason = c.model, c.generate, c.insert, c.reason

        self.generate.on_click(lambda _b: self.click_generate())
        self.insert.on_click(lambda _b: self.insert_code())
        self.gallery.reuse.on_click(lambda _b: self.reuse_settings(self.gallery.selected[0].request)
                                    if self.gallery.selected else None)
        self.gallery.copy_seed.on_click(lambda _b: self.copy_selected_seed())
        self.history_tab.reuse.on_click(lambda _b: self._reuse_picked())
        self.history_tab.show.on_click(lambda _b: self._show_picked())
        self.tabs.observe(self._on_tab, names="selected_index")
        self.session.subscribe(self._on_job)
        self.prompt.observe(lambda _change: self.controls.blocked and self.check_key(), names="value")
        self.check_key()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run `fn` after `delay` seconds on the client's poller workers (the panel has no threads)."""
        self.session.client.poller.call_later(delay, fn)

    # == what the panel knows ======================================================================
    @property
    def jobs(self) -> dict[str, Job]:
        """Every job seen since the panel opened, oldest first, by task id (`stored:<id>` for a reuse)."""
        return self.tasks.jobs

    @property
    def mine(self) -> set[str]:
        """Task ids submitted from this panel."""
        items = self.tasks.items
        return {job.task_id for k in set(self.tasks.mine)
                if isinstance(job := items.get(k), Job) and job.task_id is not None}

    @property
    def closed(self) -> bool:
        """True once `close()` ran: the panel no longer listens to the session."""
        return self._closed

    @property
    def selected(self) -> tuple[Job, StoredImage] | None:
        return self.gallery.selected

    @property
    def gallery_items(self) -> list[tuple[Job, StoredImage]]:
        return list(self.gallery.items)

    def task_rows(self) -> list[dict]:
        """What the task list shows, newest first: one dict per task or unsent submission."""
        return self.tasks.task_rows()

    def render_tasks(self) -> None:
        self.tasks.refresh()

    # == controls ==================================================================================
    def current_request(self, seed: str | None = None) -> GenerationRequest:
        """The request the controls describe (raises InvalidRequestError saying what to fix)."""
        return self.controls.current_request(seed)

    def validate(self) -> GenerationRequest | None:
        return self.controls.validate()

    def new_seed(self) -> str:
        """Fill the seed box with a new random seed."""
        return self.controls.new_seed()

    def reuse_settings(self, request: GenerationRequest | dict | None) -> None:
        """Fill the controls from a request (or a history request dict)."""
        self.controls.fill(request)

    def cost_line(self, model: str) -> tuple[str, bool]:
        """What a task of `model` would cost (`~`: an estimate until the price is measured) and what is left of
        the kernel's budget (`%config Imagen4Magics.budget`); True when it would pass it. `reused, 0 credits` when
        the controls' seeded settings will be taken from the history (no request sent)."""
        if self._will_reuse():
            return "reused, 0 credits: already in the history, nothing is sent", False
        spending = self.session.spending
        credits, measured = spending.prices.price(model)
        text = cost_text((credits, measured))
        left = spending.left()
        if left is None:
            return text, False
        over = credits > left + 1e-9
        text += (f" · {format_credits(left)} of {format_credits(spending.budget or 0)} left in the kernel's budget"
                 + (" (raise it with %config Imagen4Magics.budget = N)" if over else ""))
        return text, over

    def _will_reuse(self) -> bool:
        """Whether Generate would take the controls' request from the history: a typed seed (an empty box gets
        a new random one) and a stored result the session's reuse policy allows."""
        if not self.controls.seed.value.strip():
            return False
        try:
            return self.session.find_reusable(self.controls.current_request()) is not None
        except Exception:  # not a valid request yet (the reason line says why), or no history
            return False

    # == the key ===================================================================================
    def check_key(self) -> str:
        """Show the missing-key banner (and turn Generate off, saying why) while the session has no key. A panel
        action: the key and address in force are read again (`Session.begin`)."""
        self.session.begin()
        self.controls.blocked = self.banner.check()
        self.controls.validate()
        if self.controls.blocked:
            self._watch_key()
        return self.controls.blocked

    def _watch_key(self) -> None:
        """While the banner shows, look for a key every KEY_RECHECK seconds (on the poller), so the banner clears
        by itself once a key works (set in a cell, a `.env` file, `%imagen4 key`); no thread of its own."""
        with self._lock:
            if self._key_watch or self._closed:
                return
            self._key_watch = True

        def again() -> None:
            with self._lock:
                self._key_watch = False
            if not self._closed:
                self.check_key()
        try:
            self._later(KEY_RECHECK, again)
        except Exception:  # no client can be made (the banner says why): "Check again" still works
            with self._lock:
                self._key_watch = False

    def _start_simulator(self) -> str:
        """`%imagen4 simulator` for this panel's session; what it said."""
        from ..service import simulator_command

        said: list[str] = []
        simulator_command(self.session, lambda text, kind="info": said.append(text), stop=False)
        return said[-1] if said else ""

    # == submitting ================================================================================
    def click_generate(self) -> dict | None:
        """What a click on Generate does: `submit()`, unless it is the second click of a double click (within
        `DEBOUNCE` seconds of the last one that sent, the controls unchanged); None then."""
        if self.check_key():
            return None
        now, state = time.monotonic(), self.controls.state()
        with self._lock:
            last = self._last_click
            if last is not None and now - last[0] < DEBOUNCE and last[1] == state:
                return None
        record = self.submit()
        if record is not None:
            with self._lock:
                self._last_click = (now, state)
        return record

    def submit(self, *, wait: bool = False) -> dict | None:
        """What Generate does: validate, pick a seed if none, and queue it with the session's sender like every
        other request (the kernel stays free: the sender sends it under the create limit).

        Returns the submission record (`request`, and `job` or `error`); `wait=True` blocks until sent.
        """
        request = self.controls.take_request()
        if request is None:
            return None
        record: dict[str, Any] = {"request": request, "job": None, "error": None, "at": time.time(),
                                  "sent": threading.Event()}
        with self._lock:
            self.submissions.append(record)
        self.tasks.add_submission(record)
        self._send_request(record)
        job = record["job"]
        if wait and job is not None and not job.done():
            self.session.client.wait_sent(job, 30)
        return record

    def _send_request(self, record: dict) -> None:
        me = threading.get_ident()
        with self._lock:
            self._submitting.add(me)
        try:
            # returns at once: the row says "sending" while the request waits for its slot
            record["job"] = self.session.submit(record["request"], source="panel")
        except Imagen4Error as err:
            record["error"] = err
        except Exception as err:  # never lose a click silently
            record["error"] = Imagen4Error(f"{type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._submitting.discard(me)
        self._submission_done(record)

    def _submission_done(self, record: dict) -> None:
        self.controls.show_cost()  # the budget's remainder changed (or a price was measured)
        if self.tasks.sent(record):
            record["job"].add_done_callback(self._on_done)
        record["sent"].set()

    # == session events (any thread: the poller's, or the kernel's for a cell's task) ==============
    # a job's row follows its changes; its images and the history tab follow its done signal
    def _on_job(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                return
            mine = threading.get_ident() in self._submitting
        if self.tasks.show_job(job, mine=mine):
            job.add_done_callback(self._on_done)  # at once for a job already done (one reused from the history)

    def _on_done(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                return
        self.tasks.show_job(job)
        self.controls.show_cost()
        if job.error is None and job.images:
            self.gallery.add(job)
        if self.tabs.selected_index == HISTORY_TAB:
            self.history_tab.request()

    # == gallery ===================================================================================
    def show_images(self, job: Job) -> None:
        """Put a finished job's images at the front of the gallery."""
        self.gallery.add(job)

    def select(self, item: tuple[Job, StoredImage] | None) -> None:
        """Show one image in the larger view (None closes it)."""
        self.gallery.select(item)
        if item is not None:
            self.tabs.selected_index = 0

    def save_selected(self, path: str | None = None) -> Path | None:
        """Copy the selected image's file to `path` (default: the "save as" box)."""
        return self.gallery.save_selected(path)

    def copy_selected_seed(self) -> str | None:
        """Copy the selected image's seed to the clipboard (and put it in the box beside the button)."""
        if self.selected is None:
            return None
        req = self.selected[0].request
        if not req or not req.seed:
            self.gallery.view_status.value = "This task was sent without a seed."
            return None
        self.gallery.seed_copy.value = req.seed
        self.inserter.copy(req.seed)
        self.gallery.view_status.value = f"Seed <b>{esc(req.seed)}</b> copied (it is also selected in the box)."
        return req.seed

    # == insert as code ============================================================================
    def code_request(self) -> GenerationRequest | None:
        """The request "Insert as code" writes: the selected image's, else the latest task's, else the controls'."""
        if self.selected is not None and self.selected[0].request is not None:
            return self.selected[0].request
        with self._lock:
            sent = [r["request"] for r in self.submissions if r["error"] is None]
        if sent:
            return sent[-1]
        try:
            return self.controls.current_request()
        except InvalidRequestError as err:
            self.inserter.say(f"<span class='imagen4-reason'>Nothing to insert: {esc(err)}</span>")
            return None

    def insert_code(self) -> str | None:
        """Insert the `%%imagen4` cell below this one (JupyterLab 4 / Notebook 7) and show it for copying."""
        request = self.code_request()
        return self.inserter.insert(request) if request is not None else None

    # == history tab ===============================================================================
    def _on_tab(self, change: dict) -> None:
        if change["new"] == HISTORY_TAB:
            self.history_tab.request()

    def request_history(self) -> None:
        """Redraw the history tab soon, on the poller's workers (thumbnails take time; the kernel stays free)."""
        self.history_tab.request()

    def refresh_history(self) -> None:
        """Redraw the history tab now from the session's history (newest first, filtered by the search box)."""
        self.history_tab.refresh()

    def history_entries(self) -> list[TaskEntry]:
        return self.history_tab.entries()

    def _reuse_picked(self) -> None:
        entry = self.history_tab.chosen()
        if entry is not None:
            self.reuse_settings(entry.request)

    def _show_picked(self) -> None:
        entry = self.history_tab.chosen()
        if entry is None or entry.state != "success":
            return
        job = self.session.job_from_history(entry)
        if job.images:
            self.gallery.add(job)
            self.select((job, job.images[0]))

    # == lifetime ==================================================================================
    def close(self) -> None:
        """Stop listening to the session and close every widget of the panel."""
        with self._lock:
            self._closed = True
        self.session.unsubscribe(self._on_job)
        for part in (self.tasks, self.gallery, self.history_tab, self.inserter, self.controls):
            part.close()
        super().close()
