"""The panel's history tab: the session's history as the `%imagen4 history` table (`outputs.history_bundle`,
the one renderer), a search box, and a task picker for Reuse settings and Show.

Drawing reads the history file and thumbnails, so `request()` draws on the client's poller workers (`later`)
and the kernel stays free; requests made while one is pending are folded into it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W

from ...api.cards import esc, shorten
from ...records.history import TaskEntry
from ..outputs import history_bundle
from .tasks import STATE_WORDS


def entry_label(entry: TaskEntry) -> str:
    """One line naming a history entry in the picker: time, state, origin, prompt, task id."""
    req = entry.request or {}
    stamp = time.strftime("%m-%d %H:%M", time.localtime(entry.submitted_at)) if entry.submitted_at else "?"
    state = STATE_WORDS.get(entry.state, entry.state)
    return (f"{stamp} · {state} · {entry.source or '?'} · {shorten(req.get('prompt'), 50)} · {entry.task_id}")


class HistoryTab(W.VBox):
    """`session` gives the history; `limit` entries are shown, newest first, filtered by the search box.
    The Reuse settings and Show buttons act on the picked task; the panel wires them."""

    def __init__(self, session: Any, later: Callable[[float, Callable[[], None]], None], *, limit: int = 20):
        self.session = session
        self.later = later
        self.limit = limit
        self.shown: list[TaskEntry] = []
        self.closed = False
        self._pending = False
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()
        self.search = W.Text(placeholder="Search prompts, seeds, task ids", continuous_update=True,
                             layout=W.Layout(width="320px"))
        self.search.add_class("imagen4-history-search")
        self.refresh_button = W.Button(description="Refresh", icon="refresh", layout=W.Layout(width="auto"))
        self.refresh_button.add_class("imagen4-history-refresh")
        self.pick = W.Dropdown(options=[], description="Task", layout=W.Layout(width="560px"),
                               style={"description_width": "auto"})
        self.pick.add_class("imagen4-history-pick")
        self.reuse = W.Button(description="Reuse settings", icon="undo", layout=W.Layout(width="auto"),
                              disabled=True, tooltip="Fill the controls with the picked task's settings")
        self.reuse.add_class("imagen4-history-reuse")
        self.show = W.Button(description="Show", icon="image", layout=W.Layout(width="auto"), disabled=True,
                             tooltip="Put the picked task's images in the gallery and open the first")
        self.show.add_class("imagen4-history-show")
        self.table = W.HTML()
        self.table.add_class("imagen4-history-table")
        top = W.HBox([self.search, self.refresh_button], layout=W.Layout(align_items="center"))
        actions = W.HBox([self.pick, self.reuse, self.show], layout=W.Layout(align_items="center",
                                                                            flex_flow="row wrap"))
        for row in (top, actions):
            row.add_class("imagen4-row")
        super().__init__([top, actions, self.table])
        self.add_class("imagen4-history")
        self.search.observe(lambda _change: self.request(), names="value")
        self.refresh_button.on_click(lambda _b: self.request())
        self.pick.observe(lambda _change: self._enable(), names="value")

    def entries(self) -> list[TaskEntry]:
        return self.session.history.search(self.search.value.strip() or None, limit=self.limit)

    def chosen(self) -> TaskEntry | None:
        """The picked task's entry (as last drawn)."""
        return next((e for e in self.shown if e.task_id == self.pick.value), None)

    def request(self) -> None:
        """Redraw soon on the poller's workers (several requests while one is pending make one redraw)."""
        with self._lock:
            if self._pending or self.closed:
                return
            self._pending = True
        try:
            self.later(0.0, self._run)
        except Exception:  # no client to run it (a broken configuration): draw here
            self._run()

    def _run(self) -> None:
        with self._lock:
            self._pending = False
            if self.closed:
                return
        self.refresh()

    def refresh(self) -> None:
        """Redraw now from the session's history (newest first, filtered by the search box)."""
        with self._draw_lock:
            history = self.session.history
            try:
                entries = self.entries()
                bundle = history_bundle(entries, history, thumbnails=True, base=self._base())
            except OSError as err:
                self.shown = []
                self.table.value = f"<span class='imagen4-reason'>Cannot read {esc(history.path)}: {esc(err)}</span>"
                self._set_options([])
                return
            if not entries and self.search.value.strip():
                bundle = {"text/html": "<i>No task matches.</i>"}
            self.shown = entries
            self.table.value = bundle["text/html"]
            self._set_options(entries)

    def _set_options(self, entries: list[TaskEntry]) -> None:
        keep = self.pick.value
        options = [(entry_label(e), e.task_id) for e in entries]
        if tuple(self.pick.options) != tuple(options):
            self.pick.options = options
        ids = [o[1] for o in options]
        self.pick.value = keep if keep in ids else (ids[0] if ids else None)
        self._enable()

    def _enable(self) -> None:
        entry = self.chosen()
        self.reuse.disabled = entry is None or not entry.request
        self.show.disabled = entry is None or entry.state != "success"

    def _base(self) -> Path:
        """Image paths are named relative to the notebook's folder, as in `%imagen4 history`."""
        notebook = self.session.notebook
        return Path(notebook).parent if notebook else Path.cwd()

    def close(self) -> None:
        with self._lock:
            self.closed = True
        super().close()
