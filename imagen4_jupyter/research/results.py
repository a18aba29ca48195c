"""The results side of a batch: each item's fate (`BatchItem`) and `BatchResult` (a table: `rows`,
`to_dataframe()`, HTML with thumbnails). `batch.py` does the sending; this module knows nothing of it beyond the
small `BatchControl` interface a result uses to stop or wait for the sending."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..api import errors as E
from ..api.cards import (
    BLUE,
    FG,
    GREEN,
    RED,
    TASK_ID_WIDTH,
    THUMBS_WIDTH,
    clip_line,
    esc,
    fit_table,
    shorten,
    task_id_html,
    thumbs_html,
)
from ..api.job import Job, Stage
from ..api.models import short_name
from ..api.request import GenerationRequest

PARAM_FIELDS = ("negative_prompt", "aspect_ratio", "num_images", "seed")


# -- states -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateView:
    """How a batch item's state reads everywhere (table, progress line, summaries, sheets): `label` (words),
    `tone` (its colour class: ok, bad, warn, muted, active), `bucket` (the count it adds to), and `stage`: where
    the item is in a request's life, in the vocabulary every front-end shares (`api/job.py`)."""

    label: str
    tone: str
    bucket: str
    final: bool
    stage: Stage = "asked"


# The one mapping from a batch item's `state` to its views. A state name is a word, never a sentence (the
# sentence is the item's `note` or `error`). Point this table at a new state vocabulary and every view follows.
STATE_VIEWS: dict[str, StateView] = {  # a batch item's state -> words, tone, count, and its stage in a request's life
    "pending": StateView("pending", "active", "pending", False, "asked"),
    "submitting": StateView("sending", "active", "running", False, "queued"),
    "running": StateView("running", "active", "running", False, "created"),
    "success": StateView("success", "ok", "success", True, "succeeded"),
    "fail": StateView("failed", "bad", "failed", True, "failed"),  # the service could not generate it
    "error": StateView("error", "bad", "failed", True, "failed"),
    "lost-unknown": StateView("outcome unknown", "warn", "lost", True, "outcome_unknown"),  # never resent
    "not-submitted": StateView("not sent", "muted", "not_sent", True, "not_sent"),  # stopped, interrupted, timed out
    "over-budget": StateView("not sent (budget)", "muted", "budget", True, "not_sent"),  # `budget=`: not a failure
}
# the counts of a batch (progress line, summaries) in the order they are said, with their words
BUCKETS: dict[str, str] = {"success": "success", "running": "running", "failed": "failed",
                           "lost": "outcome unknown", "not_sent": "not sent", "budget": "not sent (budget)",
                           "pending": "pending"}
FAILURE_BUCKETS = ("failed", "lost")  # what turns a batch's bar red; a budget's or a stop's "not sent" does not
TONE_COLOURS = {"ok": GREEN, "bad": RED, "warn": "var(--jp-warn-color1,#ef6c00)",
                "muted": "var(--jp-ui-font-color2,#616161)", "active": BLUE}
FINAL_STATES = tuple(state for state, view in STATE_VIEWS.items() if view.final)


def state_view(state: str) -> StateView:
    """The label, colour class and count of a batch item's state (an unknown state reads as itself)."""
    view = STATE_VIEWS.get(state)
    return view if view is not None else StateView(state, "active", "pending", False)


# -- items ------------------------------------------------------------------------------------------
@dataclass
class BatchItem:
    """One request of a batch and what became of it. `state` (one of `STATE_VIEWS`): pending, submitting,
    running, success, fail (the service could not generate it), error, lost-unknown (sent, outcome unknown:
    never resent), not-submitted (stopped, interrupted, timed out) or over-budget (`budget=`: not sent, not
    a failure); `state_view(item.state)` says how it reads, `note` why it was not sent."""

    index: int
    request: GenerationRequest
    state: str = "pending"
    origin: str | None = None  # created | reused (stored result, no request) | followed (an existing task)
    job: Job | None = None
    error: BaseException | None = None
    started_at: float | None = None
    finished_at: float | None = None
    follows: int = 0
    note: str = ""

    @property
    def stage(self) -> Stage:
        """Where the item is in a request's life (`api/job.py`): its job's stage once it has one, else its state's."""
        if self.job is not None and self.job.stage != "asked":
            return self.job.stage
        return state_view(self.state).stage

    @property
    def task_id(self) -> str | None:
        if self.job is not None:
            return self.job.task_id
        return getattr(self.error, "task_id", None)

    @property
    def images(self) -> list:
        return list(self.job.images) if self.job is not None and self.state == "success" else []

    @property
    def paths(self) -> list[str]:
        return [str(im.path) for im in self.images]

    @property
    def status(self) -> str:
        """Read-only alias of `state` (older code read `status`)."""
        return self.state

    @property
    def view(self) -> StateView:
        """How the state reads (`state_view`)."""
        return state_view(self.state)

    @property
    def label(self) -> str:
        """The state in words; while running, with the service's own state (queuing, generating)."""
        if self.state == "running" and self.job is not None and not self.job.done() and self.job.status:
            return f"running ({self.job.status})"
        return self.view.label

    @property
    def done(self) -> bool:
        return self.view.final

    def row(self) -> dict[str, Any]:
        req = self.request
        return {"index": self.index, "prompt": req.prompt, "model": short_name(req.model),
                "params": {k: getattr(req, k) for k in PARAM_FIELDS},
                "task_id": self.task_id, "state": self.state, "origin": self.origin,
                "images": self.paths, "error": _error_text(self.error), "note": self.note or None}


def _error_text(err: BaseException | None) -> str | None:
    if err is None:
        return None
    title = getattr(err, "title", type(err).__name__)
    return f"{title}: {err}"


COUNT_NAMES = ("done", *BUCKETS, "reused")


def item_counts(items: list[BatchItem]) -> dict[str, int]:
    """The counts of a batch in one pass: `done`, one per bucket of `BUCKETS` (each item in its state's), and
    `reused` (successes shown from the history)."""
    c = dict.fromkeys(COUNT_NAMES, 0)
    for item in items:
        view = item.view
        c["done"] += view.final
        c[view.bucket] = c.get(view.bucket, 0) + 1
        c["reused"] += item.state == "success" and item.origin == "reused"
    return c


def counts_text(counts: dict[str, int]) -> list[str]:
    """The non-zero buckets in words, in `BUCKETS` order: ["3 success", "2 not sent (budget)"]."""
    return [f"{counts[b]} {words}" for b, words in BUCKETS.items() if counts.get(b)]


class BatchControl(Protocol):
    """What a `BatchResult` asks of whatever sends its items (`batch.py`'s runner)."""

    @property
    def submitting(self) -> bool:
        """True while requests may still be sent from a background thread (`generate_many(wait=False)`)."""
        ...

    def stop(self, why: str) -> None:
        """Send nothing more: items not yet sent become not-submitted (with `why` as their note)."""
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait until nothing more will be sent; False if it still may after `timeout` seconds."""
        ...


# -- results ------------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """The items of a batch with their tasks, states, images and errors; a table (`rows`, `to_dataframe()`).

    Items still running when `generate_many` returned (timeout, interrupt) keep updating; `wait()` blocks on
    them. `stats` has the numbers of the run: tasks created, createTask requests, 429 answers, pauses,
    reused, followed, lost, max in flight, wall time.
    """

    items: list[BatchItem]
    batch_id: str
    stats: dict[str, Any] = field(default_factory=dict)
    control: BatchControl | None = field(default=None, repr=False, compare=False)  # the sending side

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index: int) -> BatchItem:
        return self.items[index]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per item: index, prompt, model (short name), params, task_id, state, origin, images (paths),
        error, note (why it was not sent, for example the budget)."""
        return [item.row() for item in self.items]

    @property
    def jobs(self) -> list[Job | None]:
        return [item.job for item in self.items]

    @property
    def results(self) -> list:
        """The `Result` of each item (None where it did not succeed)."""
        return [item.job.wait(0) if item.state == "success" and item.job is not None else None
                for item in self.items]

    @property
    def task_ids(self) -> list[str | None]:
        return [item.task_id for item in self.items]

    @property
    def failed(self) -> list[BatchItem]:
        """Items the service could not generate or that ended with an error (not the ones never sent)."""
        return [i for i in self.items if i.view.bucket == "failed"]

    @property
    def lost(self) -> list[BatchItem]:
        """Items whose createTask outcome is unknown (never resent; check the dashboard)."""
        return [i for i in self.items if i.view.bucket == "lost"]

    @property
    def not_sent(self) -> list[BatchItem]:
        """Items never sent: a budget, a stop, an interrupt or the timeout kept them (their `note` says which)."""
        return [i for i in self.items if i.view.bucket in ("not_sent", "budget")]

    @property
    def ok(self) -> bool:
        return all(i.state == "success" for i in self.items)

    def counts(self) -> dict[str, int]:
        """How many items are in each state (state names as keys)."""
        out: dict[str, int] = {}
        for item in self.items:
            out[item.state] = out.get(item.state, 0) + 1
        return out

    @property
    def submitting(self) -> bool:
        """True while a batch started with `generate_many(..., wait=False)` may still send requests."""
        return self.control is not None and self.control.submitting

    def stop(self, why: str = "not sent: stopped") -> None:
        """Send nothing more: items not yet sent become not-submitted; tasks already running go on."""
        if self.control is not None:
            self.control.stop(why)

    def wait(self, timeout: float | None = None) -> BatchResult:
        """Block until every item has finished: a batch started with `wait=False`, or whose run stopped early
        (timeout, interrupt) with tasks still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.control is not None and not self.control.join(timeout):
            raise E.Imagen4TimeoutError(f"The batch is still submitting after {timeout:g} s.")
        while True:
            running = [i for i in self.items if i.job is not None and not i.done]
            if not running:
                return self
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise E.Imagen4TimeoutError(f"{len(running)} item(s) still running after {timeout:g} s.")
            item = running[0]
            assert item.job is not None  # `running` holds only items with a job
            try:
                item.job.wait(min(0.5, remaining) if remaining is not None else 0.5)
            except E.Imagen4Error:
                pass  # its error (or a timeout of this short wait); the item's state says which
            if not item.done:  # the job is done but the batch's callback has not yet settled the item
                time.sleep(0.01)

    def summary(self) -> str:
        s = self.stats
        line = f"{len(self)} items: " + ", ".join(counts_text(item_counts(self.items)))
        if s:
            line += (f" · {s.get('created', 0)} tasks created, {s.get('reused', 0)} reused, "
                     f"{s.get('followed', 0)} followed")
            if s.get("rate_limited"):
                line += f" · rate limited {s['rate_limited']}× ({s.get('paused_s', 0):.0f} s paused)"
            if s.get("budget") is not None:
                line += (f" · budget {s['budget']:g}: ~{s.get('estimated_credits', 0):g} credits sent"
                         + (f", {s['over_budget']} not sent" if s.get("over_budget") else ""))
            line += f" · {s.get('wall_s', 0):.1f} s"
        return line

    def __repr__(self) -> str:
        return f"<BatchResult {self.summary()}>"

    def to_dataframe(self):
        """A pandas DataFrame, one row per item (params spread into columns). Needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas (pip install pandas); `.rows` gives the same table "
                              "as a list of dicts.") from None
        records = []
        for row in self.rows:
            rec = {k: v for k, v in row.items() if k != "params"}
            rec.update(row["params"])
            records.append(rec)
        columns = ["index", "prompt", *PARAM_FIELDS, "model", "task_id", "state", "origin", "images", "error",
                   "note"]
        return pd.DataFrame.from_records(records, columns=columns).set_index("index")

    def _repr_html_(self, max_rows: int = 200) -> str:
        # theme colours (JupyterLab's variables); the prompt (parameters and any error or note below it) takes
        # what the other columns leave and gives way first; state, task id and thumbnails keep their widths; a
        # state's colour marks a dot before its word, never the text (readable in light and dark themes)
        rows = []
        for item in self.items[:max_rows]:
            req = item.request
            params = [short_name(req.model), req.aspect_ratio, f"{req.num_images} img"]
            if req.seed is not None:
                params.append(f"seed {req.seed}")
            if req.negative_prompt:
                params.append("neg: " + shorten(req.negative_prompt, 30))
            state = item.label + (f" ({item.origin})" if item.origin in ("reused", "followed") else "")
            colour = TONE_COLOURS.get(item.view.tone, BLUE)
            dot = (f"<span style='display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:5px;"
                   f"background:{colour}'></span>")
            why = _error_text(item.error) or item.note or ""
            what = (clip_line(req.prompt, 200) + clip_line(" · ".join(params), style="font-size:11px")
                    + (clip_line(why) if why else ""))
            rows.append([str(item.index), what, f"{dot}<span style='overflow-wrap:anywhere'>{esc(state)}</span>",
                         task_id_html(item.task_id), thumbs_html([im.path for im in item.images[:4]])])
        if len(self.items) > max_rows:
            rows.append(["…", f"{len(self.items) - max_rows} more rows (see .rows)", "", "", ""])
        columns = [("#", "28px"), ("prompt", ""), ("state", "84px"), ("task id", TASK_ID_WIDTH),
                   ("images", THUMBS_WIDTH)]
        return (f"<div class='imagen4-batch' style='color:{FG};max-width:100%'><div "
                f"title='{esc(self.summary())}'><b>imagen4 batch</b>: {esc(self.summary())}</div>"
                f"{fit_table(columns, rows, 'imagen4-batch-table')}</div>")
