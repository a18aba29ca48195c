"""The panel's task list: one row per task (or per submission not yet a task), newest first.

Items are keyed by task id (a job reused from the history is `stored:<id>`). A task id is listed once: a reuse
of a task already listed shows on that task's row ("reused 2×, nothing sent"), which moves to the top; a reuse
of an older task gets a row of its own marked "reused". Reuses are not counted as tasks. Each row is a few
widgets on one line: the state in words and the elapsed time, a `FloatProgress`, and what the task is (the
prompt ends in an ellipsis, whole on hover). Rows change when the session says a job changed; while something
runs, the elapsed times and bars are refreshed once a second by the client's poller timer (`later`), which
stops when nothing runs. "Clear" hides the ended rows.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ...api.cards import esc, plural, task_id_html
from ...api.errors import OutcomeUnknownError
from ...api.job import Job

STATE_WORDS = {"submitted": "sent", "waiting": "waiting", "queuing": "queued", "generating": "generating",
               "success": "done", "fail": "failed", "error": "error", "unsent": "not sent",
               "unknown": "unknown", "sending": "sending", "reused": "reused"}
ENDED = ("success", "fail", "error", "unsent", "unknown")
MAX_ROWS = 30  # newest rows shown; older ones are dropped from the view (their jobs stay in `jobs`)
TICK = 1.0  # seconds between refreshes of elapsed times and bars while something runs
DEFAULT_GENERATION = 8.0  # seconds a generation is expected to take before the schedule has learned any


def expected_generation(schedule: Any, job: Job) -> float:
    """How long this job's generation is expected to take: the middle of the window the client's learning
    schedule (`SmartSchedule.window`) predicts for its aspect ratio and image count, else a default."""
    window = getattr(schedule, "window", None)
    win = window(job) if callable(window) else None
    return (win[0] + win[1]) / 2 if win else DEFAULT_GENERATION


def progress(status: str, done: bool, generating_for: float | None, expected: float) -> float:
    """A bar's fill: fixed steps while sent, waiting and queued; while generating, the time spent against
    the expected duration (never full before the task is done)."""
    if done:
        return 1.0
    if status == "generating" and generating_for is not None:
        return min(0.95, 0.3 + 0.65 * generating_for / max(expected, 0.5))
    return {"submitted": 0.05, "waiting": 0.12, "queuing": 0.2}.get(status, 0.1)


def job_key(job: Job) -> str:
    """A row's key: the request's own identity (its local id, from the moment it is asked for), the task id for
    a task followed again, `stored:<task id>` for images reused from the history."""
    return f"stored:{job.task_id}" if job.reused else job.local_id or job.task_id or f"job:{id(job)}"


STORED = "stored:"


class TaskRow(W.HBox):
    """The widgets of one row; `show(row)` puts a `TaskList.task_rows()` dict in them."""

    def __init__(self) -> None:
        self.state_html = W.HTML()
        self.state_html.add_class("imagen4-task-state")
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="90px"))
        self.bar.add_class("imagen4-bar")
        self.info = W.HTML(layout=W.Layout(flex="1 1 0", min_width="0"))
        self.info.add_class("imagen4-task-info")
        self.state = ""
        super().__init__([self.state_html, self.bar, self.info],
                         layout=W.Layout(flex_flow="row nowrap", align_items="center", width="100%"))
        self.add_class("imagen4-task")

    def show(self, row: dict) -> None:
        state = "reused" if row["reused"] else row["state"] if row["state"] in STATE_WORDS else "other"
        if state != self.state:  # a DOM class: known words only
            if self.state:
                self.remove_class(f"imagen4-s-{self.state}")
            self.add_class(f"imagen4-s-{state}")
            self.state = state
        word = STATE_WORDS.get(state, row["state"])
        elapsed = "" if row["reused"] else f"{row['elapsed']:.1f} s"
        self.state_html.value = (f"<span class='imagen4-badge'>{esc(word)}</span>"
                                 f"<span class='imagen4-elapsed'>{elapsed}</span>")
        self.bar.value = row["progress"]
        self.bar.tooltip = f"{int(row['progress'] * 100)}%"
        self.bar.bar_style = ("danger" if state in ("fail", "error", "unsent", "unknown")
                              else "success" if state in ("success", "reused") else "")
        extra = ""
        if row["reused"]:
            extra = "<span class='imagen4-note'>from the history, nothing sent</span>"
        elif row.get("reuses"):
            extra = (f"<span class='imagen4-note' title='reused {row['reuses']}× from the history, nothing sent'>"
                     f"reused {row['reuses']}×</span>")
        if row.get("simulated"):
            extra += "<span class='imagen4-note'>simulated</span>"
        error = f"<span class='imagen4-err'>{esc(row['error'])}</span>" if row["error"] else ""
        tid = task_id_html(row["task_id"])  # gives way in its middle: `task_go…087861`, whole on hover and copy
        self.info.value = (f"<div class='imagen4-task-line'><span class='imagen4-origin'>{esc(row['origin'])}</span>"
                           f"{tid}{extra}<span class='imagen4-prompt-text' title='{esc(row['prompt'][:2000])}'>"
                           f"{esc(row['prompt'][:300])}</span></div>{error}")


class TaskList(W.VBox):
    """Jobs and submissions in the order they were first seen; the newest MAX_ROWS are shown.

    `later(delay, fn)` runs `fn` after `delay` seconds on the client's poller (the once-a-second refresh);
    `expected(job)` is how long a job's generation is expected to take.
    """

    def __init__(self, later: Callable[[float, Callable[[], None]], None], expected: Callable[[Job], float],
                 simulated: Callable[[str | None], bool] | None = None):
        self.later = later
        self.expected = expected
        self.simulated = simulated or (lambda _task_id: False)
        self.head = W.HTML()
        self.head.add_class("imagen4-tasks-head")
        self.clear_button = W.Button(description="Clear", icon="trash", layout=W.Layout(width="auto", display="none"),
                                     tooltip="Hide the ended tasks from this list (they stay in the history)")
        self.clear_button.add_class("imagen4-tasks-clear")
        self.clear_button.on_click(lambda _b: self.clear())
        self.hidden: set[str] = set()  # keys cleared from the view
        self.reuses: dict[str, int] = {}  # task id -> how often the panel saw it reused from the history
        self.list = W.VBox()
        self.items: dict[str, Job | dict] = {}  # key -> job, or submission record without a task; oldest first
        self.mine: set[str] = set()  # keys of the jobs sent from this panel
        self.ticking = False
        self.closed = False
        self._rows: dict[str, TaskRow] = {}
        self._generating: dict[str, float] = {}  # key -> when the row first saw `generating`
        self._lock = threading.RLock()
        self._count = 0
        top = W.HBox([self.head, self.clear_button], layout=W.Layout(align_items="center"))
        top.add_class("imagen4-row")
        super().__init__([top, self.list], layout=W.Layout(width="100%"))
        self.add_class("imagen4-tasks")

    @property
    def jobs(self) -> dict[str, Job]:
        """The jobs seen, oldest first, by task id (`stored:<id>` for a reuse; the row's key while a request has
        no task id yet)."""
        with self._lock:
            return {v.task_id if v.task_id and not v.reused else k: v for k, v in self.items.items()
                    if isinstance(v, Job)}

    # -- what changes the list -----------------------------------------------------------------
    def show_job(self, job: Job, *, mine: bool = False) -> bool:
        """Add a job's row, or update it (a job reused again moves to the top). True if the job is new here."""
        key = job_key(job)
        with self._lock:
            if self.closed:
                return False
            known = self.items.get(key)
            if known is not job:
                self.items.pop(key, None)
                self.items[key] = job
                self.hidden.discard(key)
                if job.reused:
                    tid = job.task_id or ""  # as _row reads it
                    self.reuses[tid] = self.reuses.get(tid, 0) + 1
            if mine:
                self.mine.add(key)
            if job.status == "generating":
                self._generating.setdefault(key, time.monotonic())
            if known is not job:
                self._draw()
            self._update(key)
            if job.reused:
                self._update(self._task_key(job.task_id))  # the listed task's row says it was reused
            self._head()
        self._tick_soon()
        return known is not job

    def add_submission(self, record: dict) -> None:
        """A click being sent (its row says `sending` until `sent(record)`)."""
        with self._lock:
            self._count += 1
            self.items[f"send:{self._count}"] = record
            self._draw()
            self._head()
        self._tick_soon()

    def sent(self, record: dict) -> bool:
        """The submission got its job (its row gives way to the job's) or was refused (its row says why).
        True if its job is new here (the session's listener had not shown it)."""
        new = False
        with self._lock:
            key = next((k for k, v in self.items.items() if v is record), None)
            if key is None or self.closed:
                return False
            if record["job"] is not None:
                del self.items[key]
                new = self.show_job(record["job"], mine=True)
                self._draw()
            else:
                self._update(key)
            self._head()
        return new

    # -- what the list shows --------------------------------------------------------------------
    def task_rows(self) -> list[dict]:
        """What the list shows, newest first: one dict per task or submission (a task id once)."""
        with self._lock:
            return [self._row(k, self.items[k]) for k in self._shown_keys()]

    def _shown_keys(self, limit: int | None = None) -> list[str]:
        """The keys of the rows, newest activity first: a reuse of a listed task moves that task's row up
        instead of adding one (lock held)."""
        order: dict[str, int] = {}
        for pos, key in enumerate(self.items):
            if key in self.hidden:
                continue
            base = self._task_key(key.removeprefix(STORED)) if key.startswith(STORED) else key
            target = base if base in self.items and base not in self.hidden else key
            order.pop(target, None)
            order[target] = pos
        keys = list(order)[::-1]
        return keys[:limit] if limit else keys

    def _task_key(self, task_id: str | None) -> str:
        """The key of the row of the task `task_id` (lock held); the task id itself if none is listed."""
        for key, item in self.items.items():
            if isinstance(item, Job) and not item.reused and item.task_id == task_id:
                return key
        return task_id or ""

    def clear(self) -> None:
        """Hide every ended row (running ones stay); the jobs stay known (`jobs`) and in the history."""
        with self._lock:
            for key, item in self.items.items():
                if self._ended(key, item):
                    self.hidden.add(key)
            self._draw()
            self._head()

    def _row(self, key: str, item: Job | dict) -> dict:
        if isinstance(item, dict):
            if isinstance(item["error"], OutcomeUnknownError):  # it may exist (and be billed): never resent
                state, words = "unknown", str(item["error"])
            elif item["error"] is not None:
                state, words = "unsent", f"not sent: {item['error']}"
            else:
                state, words = "sending", ""
            return {"task_id": None, "state": state, "elapsed": time.time() - item["at"], "progress": 0.02,
                    "prompt": item["request"].prompt, "error": words, "origin": "panel", "reused": False}
        if item.task_id is None and not item.reused:  # still being sent, or ended without a task
            state, words = "sending", ""
            if isinstance(item.error, OutcomeUnknownError):  # it may exist (and be billed): never resent
                state, words = "unknown", str(item.error)
            elif item.error is not None:
                state, words = "unsent", f"not sent: {item.error}"
            return {"task_id": None, "state": state, "elapsed": item.elapsed, "progress": 1.0 if words else 0.02,
                    "prompt": item.request.prompt if item.request else "", "error": words,
                    "origin": "panel" if key in self.mine else "cell", "reused": False}
        since = self._generating.get(key)
        generating_for = time.monotonic() - since if since is not None else None
        fill = progress(item.status, item.finished, generating_for,
                        self.expected(item) if generating_for is not None else DEFAULT_GENERATION)
        reuses = 0 if item.reused else self.reuses.get(item.task_id or "", 0)
        return {"task_id": item.task_id, "state": item.status, "elapsed": item.elapsed, "progress": fill,
                "prompt": item.request.prompt if item.request else "",
                "error": str(item.error) if item.error is not None else "",
                "origin": "panel" if key in self.mine else "cell", "reused": item.reused, "reuses": reuses,
                "simulated": self._is_simulated(item.task_id)}

    def _is_simulated(self, task_id: str | None) -> bool:
        try:
            return bool(self.simulated(task_id))
        except Exception:  # an unreadable history must not break the list
            return False

    def _ended(self, key: str, item: Job | dict) -> bool:
        if isinstance(item, dict):
            return item["error"] is not None
        return item.finished or item.reused

    def running(self) -> int:
        with self._lock:
            return sum(1 for k, v in self.items.items() if not self._ended(k, v))

    def refresh(self) -> None:
        """Redraw every shown row (elapsed times, bars) and the heading."""
        with self._lock:
            for key in list(self._rows):
                self._update(key)
            self._head()

    def text(self) -> str:
        """The heading and every shown row's words, as HTML (what a reader of the list sees)."""
        with self._lock:
            return self.head.value + "".join(r.state_html.value + r.info.value for r in self.list.children)

    def _draw(self) -> None:
        """Make the shown rows the newest MAX_ROWS items (lock held)."""
        keys = self._shown_keys(MAX_ROWS)
        for key in [k for k in self._rows if k not in keys]:
            self._rows.pop(key).close()
        children = []
        for key in keys:
            if key not in self._rows:
                self._rows[key] = TaskRow()
                self._update(key)
            children.append(self._rows[key])
        if tuple(children) != tuple(self.list.children):
            self.list.children = tuple(children)

    def _update(self, key: str) -> None:
        row, item = self._rows.get(key), self.items.get(key)
        if row is not None and item is not None:
            row.show(self._row(key, item))

    def _head(self) -> None:
        shown = self._shown_keys()
        self.clear_button.layout.display = "flex" if any(self._ended(k, self.items[k]) for k in shown) else "none"
        if not self.items:
            self.head.value = ""
            return
        tasks = sum(1 for k in self.items if not k.startswith(STORED))
        reused = len(self.items) - tasks
        parts = [f"{self.running()} running", plural(tasks, "task")]
        if reused:
            parts.append(f"{plural(reused, 'result')} reused from the history")
        if self.hidden:
            parts.append(f"{len(self.hidden)} cleared")
        self.head.value = f"<div class='imagen4-tasks-head'><b>Tasks</b> · {' · '.join(parts)}</div>"

    # -- the once-a-second refresh --------------------------------------------------------------
    def _tick_soon(self) -> None:
        with self._lock:
            if self.ticking or self.closed or not self.running():
                return
            self.ticking = True
        try:
            self.later(TICK, self._tick)
        except Exception:  # no client to time it (a broken configuration): the rows still change on events
            with self._lock:
                self.ticking = False

    def _tick(self) -> None:
        with self._lock:
            self.ticking = False
            if self.closed:
                return
            self.refresh()
        self._tick_soon()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for row in self._rows.values():
                row.close()
            self._rows.clear()
        super().close()
