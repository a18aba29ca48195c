"""The ipywidgets panel: a thin view over the kernel's `Session` (same jobs and history as `%%imagen4`).

Controls build a `GenerationRequest` and call `Session.submit`; a listener on the session feeds a live
task list and a gallery; a history tab searches the session's history. "Insert as code" writes the
equivalent `%%imagen4` cell below the panel's cell (see `insert_js`). No protocol or history logic here.
"""
from __future__ import annotations

import json
import random
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..api.cards import esc
from ..api.errors import Imagen4Error, InvalidRequestError, OutcomeUnknownError
from ..api.job import Job
from ..api.request import ASPECT_RATIOS, MAX_IMAGES, MAX_PROMPT, GenerationRequest
from ..api.store import StoredImage, preview
from ..records.history import TaskEntry
from ..records.session import Session, get_session

__all__ = ["Panel", "cell_code", "code_problem"]

# the drawn shape of each ratio (width, height in px), shown before the label of its toggle button
RATIO_SHAPES = {"1:1": (13, 13), "16:9": (20, 11), "9:16": (9, 16), "3:4": (12, 16), "4:3": (16, 12)}
RATIO_NAMES = {"1:1": "square", "16:9": "wide", "9:16": "tall", "3:4": "portrait", "4:3": "landscape"}
STATE_WORDS = {"submitted": "sent", "waiting": "waiting", "queuing": "queued", "generating": "generating",
               "success": "done", "fail": "failed", "error": "error", "unsent": "not sent",
               "unknown": "unknown", "sending": "sending"}
MAX_GALLERY = 48  # newest images kept in the gallery grid
SEED_MAX = 2_147_483_647
THUMB_CACHE = 400


def _brace_escape(text: str) -> str:
    """The magic interpolates `{name}`; `{{` / `}}` are literal braces, so every brace is doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def cell_code(request: GenerationRequest) -> str:
    """The `%%imagen4` cell that sends exactly `request` (flags explicit, so %config defaults don't matter).

    Braces are doubled (the magic interpolates `{name}`). A seed holding spaces or quotes cannot be one
    flag token for IPython's argument splitter; `code_problem` says so and the code is shown anyway.
    """
    flags = ["-a", request.aspect_ratio, "-n", str(request.num_images)]
    if request.seed is not None:
        flags += ["-s", _brace_escape(request.seed)]
    body = _brace_escape(request.prompt)
    if request.negative_prompt:
        body += "\n---\n" + _brace_escape(request.negative_prompt)
    return "%%imagen4 " + " ".join(flags) + "\n" + body


def code_problem(request: GenerationRequest) -> str | None:
    """Why `cell_code(request)` would not send exactly this request, or None."""
    if request.seed is not None and (not request.seed.strip() or any(c.isspace() or c in "'\"" for c in request.seed)):
        return "the seed contains spaces or quotes, which the -s flag cannot hold; edit the cell's seed"
    if any(line.strip() == "---" for line in request.prompt.splitlines()):
        return "the prompt has a line holding only ---, which the cell reads as the negative prompt separator"
    return None


def insert_js(code: str, token: str, created_ms: int) -> str:
    """JavaScript that inserts a code cell holding `code` below the cell showing the panel.

    Runs in JupyterLab 4 and Notebook 7 through the trusted output of an `Output` widget (`element` is the
    output's node). It activates the panel's cell, clicks the notebook toolbar's "insert cell below"
    command button, focuses the new cell's editor and pastes the code into it. Reports `ok` or the reason it
    failed through a hidden Text widget so Python can say so. Runs once per token and never when stale
    (a reloaded page with saved widget state).
    """
    return f"""(function () {{
  const token = {json.dumps(token)}, code = {json.dumps(code)}, created = {created_ms};
  const done = (window.__imagen4_done = window.__imagen4_done || {{}});
  if (done[token] || Math.abs(Date.now() - created) > 120000) return;
  done[token] = true;
  // the output is rendered before it is attached to the page: wait until it is
  const t0 = Date.now();
  const attached = (fn) => element.isConnected ? fn() : (Date.now() - t0 < 10000 && setTimeout(() => attached(fn), 20));
  attached(() => {{
  const root = element.closest('.imagen4-panel');
  const report = (msg) => {{
    const box = root && root.querySelector('.imagen4-insert-report input, .imagen4-insert-report textarea');
    if (!box) return;
    box.value = token + ' ' + msg;
    box.dispatchEvent(new Event('input', {{bubbles: true}}));
  }};
  try {{
    const cell = element.closest('.jp-Cell');
    const nbPanel = element.closest('.jp-NotebookPanel');
    if (!cell || !nbPanel) return report('fail: the panel is not inside a JupyterLab/Notebook 7 notebook');
    const cellsAfter = () => {{
      const out = []; let n = cell.nextElementSibling;
      while (n) {{ if (n.classList.contains('jp-Cell')) out.push(n); n = n.nextElementSibling; }}
      return out;
    }};
    const before = cellsAfter()[0] || null;
    cell.dispatchEvent(new FocusEvent('focusin', {{bubbles: true}}));
    const button = nbPanel.querySelector('[data-command="notebook:insert-cell-below"]');
    if (!button) return report('fail: no "insert cell below" button in the notebook toolbar');
    // JupyterLab's toolbar buttons act on mousedown (a plain click() does nothing); click() is the fallback
    button.dispatchEvent(new MouseEvent('mousedown', {{bubbles: true, cancelable: true, button: 0}}));
    const started = Date.now();
    let clicked = false;
    const fill = () => {{
      const next = cellsAfter()[0] || null;
      const editor = next && next !== before ? next.querySelector('.cm-content') : null;
      if (!editor) {{
        if (!clicked && Date.now() - started > 1000) {{ clicked = true; button.click(); }}
        if (Date.now() - started > 5000) return report('fail: the new cell did not appear');
        return setTimeout(fill, 50);
      }}
      editor.focus();
      const data = new DataTransfer();
      data.setData('text/plain', code);
      editor.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: data, bubbles: true, cancelable: true}}));
      setTimeout(() => {{
        const text = editor.innerText || editor.textContent || '';
        report(text.indexOf(code.split('\\n')[0]) >= 0 ? 'ok' : 'fail: the editor did not take the text');
      }}, 100);
    }};
    setTimeout(fill, 0);
  }} catch (err) {{
    report('fail: ' + err);
  }}
  }});
}})();"""


def copy_js(text: str, token: str, created_ms: int) -> str:
    """JavaScript that copies `text` to the clipboard and selects the panel's seed box (the fallback)."""
    return f"""(function () {{
  const token = {json.dumps(token)}, text = {json.dumps(text)}, created = {created_ms};
  const done = (window.__imagen4_done = window.__imagen4_done || {{}});
  if (done[token] || Math.abs(Date.now() - created) > 120000) return;
  done[token] = true;
  if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).catch(() => {{}});
  const t0 = Date.now();
  const select = () => {{
    if (!element.isConnected) return Date.now() - t0 < 10000 && setTimeout(select, 20);
    const root = element.closest('.imagen4-panel');
    const box = root && root.querySelector('.imagen4-seed-copy input');
    if (box) {{ box.focus(); box.select(); }}
  }};
  select();
}})();"""


def _style_html() -> str:
    shapes = []
    for i, ratio in enumerate(ASPECT_RATIOS, start=1):
        w, h = RATIO_SHAPES[ratio]
        shapes.append(f".imagen4-ratio .widget-toggle-button:nth-of-type({i})::before {{ width:{w}px; height:{h}px; }}")
    return "<style>" + "\n".join([
        ".imagen4-panel { max-width: 980px; }",
        ".imagen4-ratio .widget-toggle-button { display:inline-flex; align-items:center; gap:6px;"
        " vertical-align: top; }",
        ".imagen4-ratio .widget-toggle-button::before { content:''; display:inline-block; box-sizing:border-box;"
        " border:2px solid currentColor; border-radius:2px; }",
        *shapes,
        ".imagen4-count { font-size: 11px; color: var(--jp-ui-font-color2, #666); text-align: right; }",
        ".imagen4-count.imagen4-over { color: var(--jp-error-color1, #c00); font-weight: bold; }",
        ".imagen4-reason { color: var(--jp-error-color1, #c00); }",
        ".imagen4-task { display:flex; flex-wrap:wrap; gap:4px 8px; align-items:center; padding:2px 0;"
        " font-size:12px; }",
        ".imagen4-task > span { white-space: nowrap; }",
        ".imagen4-big-info small { word-break: break-all; }",
        ".imagen4-task .imagen4-badge { min-width:72px; padding:0 6px; border-radius:8px; text-align:center;"
        " background: var(--jp-layout-color2, #eee); }",
        ".imagen4-task.imagen4-s-success .imagen4-badge { background:#d6f5d6; color:#145214; }",
        ".imagen4-task.imagen4-s-fail .imagen4-badge, .imagen4-task.imagen4-s-error .imagen4-badge,"
        " .imagen4-task.imagen4-s-unsent .imagen4-badge, .imagen4-task.imagen4-s-unknown .imagen4-badge"
        " { background:#fadbd8; color:#7b1d12; }",
        ".imagen4-bar { width:90px; height:6px; background: var(--jp-layout-color3, #ddd); border-radius:3px;"
        " overflow:hidden; flex:none; }",
        ".imagen4-bar > div { height:100%; background: var(--jp-brand-color1, #1976d2); }",
        ".imagen4-task .imagen4-err { color: var(--jp-error-color1, #c00); }",
        ".imagen4-task .imagen4-prompt-text { overflow:hidden; text-overflow:ellipsis; white-space:nowrap;"
        " max-width: 420px; color: var(--jp-ui-font-color2, #555); }",
        ".imagen4-thumb-box { position: relative; }",
        ".imagen4-row { gap: 8px; }",
        ".imagen4-thumb-box .imagen4-zoom { position:absolute; top:0; left:0; width:100%; height:100%; opacity:0;"
        " margin:0; cursor: zoom-in; }",
        ".imagen4-card img { object-fit: contain; background: var(--jp-layout-color2, #f3f3f3); }",
        ".imagen4-caption { font-size: 11px; color: var(--jp-ui-font-color2, #666); }",
        ".imagen4-history-row { border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); padding: 4px 0; }",
    ]) + "</style>"


class Panel(W.VBox):
    """Explore Imagen 4 with controls; tasks, images and history are the kernel session's (shared with %%imagen4).

    `Panel()` uses the kernel's session; `Panel(session=...)` another one (tests).
    Seeds: an empty seed box means a new random seed is chosen and sent with each Generate (so every task
    can be reproduced and "Insert as code" gives a cell that shows the same images); "random" fills the box;
    "keep" keeps the box's seed for the next Generate, otherwise the box is emptied after each Generate.
    """

    def __init__(self, session: Session | None = None, *, thumb_size: int = 160, history_limit: int = 20):
        self.session = session or get_session()
        self.thumb_size = thumb_size
        self.history_limit = history_limit
        self.jobs: dict[int, Job] = {}  # every job seen since the panel opened, oldest first (by id: a reused
        # job has the task id of the task it reuses)
        self._mine_jobs: set[int] = set()  # ids of the Job objects submitted from this panel (a reused job
        # shares its task id, so the id of the object says where it came from)
        self.gallery_items: list[tuple[Job, StoredImage]] = []  # newest first
        self.selected: tuple[Job, StoredImage] | None = None
        self._unsent: list[dict] = []  # submissions being sent or refused before a task existed
        self._expected_gen: list[float] = []
        self._thumbs: dict[str, tuple[bytes, str]] = {}  # previews by sha256 and size, oldest dropped first
        self._cards: dict[str, W.Widget] = {}
        self._history_rows: dict[str, tuple[str, W.Widget]] = {}
        self._cond = threading.Condition()
        self._draw_lock = threading.RLock()  # gallery and history are redrawn from the kernel and refresher threads
        self._dirty = False
        self._history_dirty = True
        self._new_done: list[Job] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._insert_token: str | None = None
        self._insert_note = ""
        self._build()
        self.session.subscribe(self._on_job)
        self._validate()

    @property
    def mine(self) -> set[str]:
        """Task ids submitted from this panel."""
        with self._cond:
            return {self.jobs[i].task_id for i in self._mine_jobs}

    # == building ==================================================================================
    def _build(self) -> None:
        full = W.Layout(width="100%")
        self.style_html = W.HTML(_style_html(), layout=W.Layout(display="none"))
        self.prompt = W.Textarea(placeholder="Describe the image you want…", rows=3, layout=full)
        self.prompt.add_class("imagen4-prompt")
        self.prompt_count = W.HTML()
        self.prompt_count.add_class("imagen4-count")
        self.negative = W.Textarea(placeholder="Negative prompt (optional): what to leave out", rows=1, layout=full)
        self.negative.add_class("imagen4-negative")
        self.negative_count = W.HTML()
        self.negative_count.add_class("imagen4-count")
        self.ratio = W.ToggleButtons(options=list(ASPECT_RATIOS), value="1:1",
                                     tooltips=[f"{r} {RATIO_NAMES[r]}" for r in ASPECT_RATIOS],
                                     style={"button_width": "auto"})
        self.ratio.add_class("imagen4-ratio")
        self.num = W.ToggleButtons(options=[str(i) for i in range(1, MAX_IMAGES + 1)], value="1",
                                   tooltips=[f"{i} image{'s' if i > 1 else ''}" for i in range(1, MAX_IMAGES + 1)],
                                   style={"button_width": "32px"})
        self.num.add_class("imagen4-num")
        self.seed = W.Text(placeholder="random each time", layout=W.Layout(width="150px"))
        self.seed.add_class("imagen4-seed")
        self.random_seed = W.Button(description="random", tooltip="Fill in a new random seed",
                                    layout=W.Layout(width="auto"))
        self.random_seed.add_class("imagen4-random-seed")
        self.keep = W.Checkbox(value=False, description="keep", indent=False, layout=W.Layout(width="auto"),
                               tooltip="Keep this seed for the next Generate (otherwise a new one each time)")
        self.keep.add_class("imagen4-keep")
        self.generate = W.Button(description="Generate", button_style="primary", icon="play",
                                 tooltip="Send a task; you can queue more while others run")
        self.generate.add_class("imagen4-generate")
        self.insert = W.Button(description="Insert as code", icon="code", layout=W.Layout(width="auto"),
                               tooltip="Put the %%imagen4 cell for the selected image's task (or the latest "
                                       "task, or these controls) below this cell")
        self.insert.add_class("imagen4-insert")
        self.reason = W.HTML()
        self.reason.add_class("imagen4-reason")

        self.tasks_html = W.HTML()
        self.tasks_html.add_class("imagen4-tasks")

        # "insert as code": code box (fallback), status, JS output and the JS -> Python report box
        self.code = W.Textarea(rows=3, layout=W.Layout(width="100%", display="none"))
        self.code.add_class("imagen4-code")
        self.insert_status = W.HTML()
        self.insert_status.add_class("imagen4-insert-status")
        self.js_out = W.Output(layout=W.Layout(display="none"))
        self.js_out.add_class("imagen4-js")
        self.insert_report = W.Text(layout=W.Layout(display="none"))
        self.insert_report.add_class("imagen4-insert-report")

        # gallery and the larger view of one image
        columns = f"repeat(auto-fill, minmax({self.thumb_size}px, 1fr))"
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=columns, grid_gap="6px", width="100%"))
        self.grid.add_class("imagen4-gallery")
        self.gallery_note = W.HTML("<i>Images appear here as tasks finish. Click one for a larger view.</i>")
        self.big = W.Image(format="png", layout=W.Layout(max_width="100%", max_height="420px",
                                                          object_fit="contain", align_self="flex-start"))
        self.big.add_class("imagen4-big")
        self.big_info = W.HTML()
        self.big_info.add_class("imagen4-big-info")
        self.reuse = W.Button(description="Reuse these settings", icon="undo", layout=W.Layout(width="auto"))
        self.reuse.add_class("imagen4-reuse")
        self.copy_seed = W.Button(description="Copy seed", icon="copy", layout=W.Layout(width="auto"))
        self.copy_seed.add_class("imagen4-copy-seed")
        self.seed_copy = W.Text(layout=W.Layout(width="150px"), placeholder="no seed")
        self.seed_copy.add_class("imagen4-seed-copy")
        self.save_path = W.Text(layout=W.Layout(width="320px"), placeholder="file path")
        self.save_path.add_class("imagen4-save-path")
        self.save = W.Button(description="Save as", icon="save", layout=W.Layout(width="auto"))
        self.save.add_class("imagen4-save")
        self.close_view = W.Button(description="Close", layout=W.Layout(width="auto"))
        self.close_view.add_class("imagen4-close-view")
        self.view_status = W.HTML()
        self.view_status.add_class("imagen4-view-status")
        self.viewer = W.VBox([
            self.big, self.big_info,
            W.HBox([self.reuse, self.copy_seed, self.seed_copy, self.close_view]),
            W.HBox([self.save_path, self.save]), self.view_status,
        ], layout=W.Layout(display="none", border="1px solid var(--jp-border-color2, #ddd)", padding="6px"))
        self.viewer.add_class("imagen4-viewer")
        gallery_tab = W.VBox([self.viewer, self.gallery_note, self.grid])

        # history tab
        self.history_search = W.Text(placeholder="Search prompts, seeds, task ids", continuous_update=True,
                                     layout=W.Layout(width="320px"))
        self.history_search.add_class("imagen4-history-search")
        self.history_refresh = W.Button(description="Refresh", icon="refresh", layout=W.Layout(width="auto"))
        self.history_refresh.add_class("imagen4-history-refresh")
        self.history_where = W.HTML()
        self.history_list = W.VBox()
        self.history_list.add_class("imagen4-history")
        history_tab = W.VBox([W.HBox([self.history_search, self.history_refresh]), self.history_where,
                              self.history_list])

        self.tabs = W.Tab(children=[gallery_tab, history_tab], titles=("Gallery", "History"))
        self.tabs.add_class("imagen4-tabs")

        seed_row = W.HBox([W.Label("Seed"), self.seed, self.random_seed, self.keep],
                          layout=W.Layout(align_items="center"))
        options = W.HBox([self.ratio, self.num, seed_row],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        actions = W.HBox([self.generate, self.insert, self.reason],
                         layout=W.Layout(align_items="center", flex_flow="row wrap"))
        for row in (seed_row, options, actions):
            row.add_class("imagen4-row")
        super().__init__([
            self.style_html, self.js_out, self.insert_report,
            self.prompt, self.prompt_count, self.negative, self.negative_count,
            options, actions, self.insert_status, self.code, self.tasks_html, self.tabs,
        ], layout=W.Layout(width="100%"))
        self.add_class("imagen4-panel")

        for w in (self.prompt, self.negative, self.seed, self.ratio, self.num):
            w.observe(self._on_input, names="value")
        self.generate.on_click(lambda _: self.submit())
        self.random_seed.on_click(lambda _: self.new_seed())
        self.insert.on_click(lambda _: self.insert_code())
        self.insert_report.observe(self._on_insert_report, names="value")
        self.reuse.on_click(lambda _: self.selected and self.reuse_settings(self.selected[0].request))
        self.copy_seed.on_click(lambda _: self.copy_selected_seed())
        self.save.on_click(lambda _: self.save_selected())
        self.close_view.on_click(lambda _: self.select(None))
        self.history_search.observe(lambda _: self.request_history(), names="value")
        self.history_refresh.on_click(lambda _: self.request_history())
        self.tabs.observe(self._on_tab, names="selected_index")

    # == controls ==================================================================================
    def _on_input(self, _change: Any = None) -> None:
        self._validate()

    def _count(self, widget: W.HTML, n: int) -> None:
        widget.value = f"{n} / {MAX_PROMPT}"
        if n > MAX_PROMPT:
            widget.add_class("imagen4-over")
        else:
            widget.remove_class("imagen4-over")

    def current_request(self, seed: str | None = None) -> GenerationRequest:
        """The request the controls describe (raises InvalidRequestError saying what to fix)."""
        # stripped like the magic strips a cell body, so "Insert as code" sends the very same request
        return GenerationRequest.create(self.prompt.value.strip(), negative_prompt=self.negative.value.strip() or None,
                                        aspect_ratio=self.ratio.value, num_images=int(self.num.value),
                                        seed=seed if seed is not None else (self.seed.value.strip() or None))

    def _validate(self) -> GenerationRequest | None:
        self._count(self.prompt_count, len(self.prompt.value))
        self._count(self.negative_count, len(self.negative.value))
        try:
            request = self.current_request()
        except InvalidRequestError as err:
            self.generate.disabled = True
            self.generate.tooltip = str(err)
            self.reason.value = esc(err)
            return None
        self.generate.disabled = False
        self.generate.tooltip = "Send a task; you can queue more while others run"
        self.reason.value = ""
        return request

    def new_seed(self) -> str:
        """Fill the seed box with a new random seed."""
        self.seed.value = str(random.randint(1, SEED_MAX))
        return self.seed.value

    def reuse_settings(self, request: GenerationRequest | dict | None) -> None:
        """Fill the controls from a request (or a history request dict)."""
        if request is None:
            return
        data = request.to_dict() if isinstance(request, GenerationRequest) else dict(request)
        self.prompt.value = data.get("prompt") or ""
        self.negative.value = data.get("negative_prompt") or ""
        if data.get("aspect_ratio") in ASPECT_RATIOS:
            self.ratio.value = data["aspect_ratio"]
        if str(data.get("num_images")) in self.num.options:
            self.num.value = str(data["num_images"])
        self.seed.value = str(data["seed"]) if data.get("seed") is not None else ""
        self._validate()

    # == submitting ================================================================================
    def submit(self, *, wait: bool = False) -> dict | None:
        """What Generate does: validate, pick a seed if none, send in the background (the kernel stays free).

        Returns the submission record (`request`, and later `job` or `error`); `wait=True` blocks until sent.
        """
        if self._validate() is None:
            return None
        seed = self.seed.value.strip() or str(random.randint(1, SEED_MAX))
        try:
            request = self.current_request(seed=seed)
        except InvalidRequestError as err:
            self.reason.value = esc(err)
            return None
        if self.keep.value:
            self.seed.value = seed
        else:
            self.seed.value = ""
        record: dict[str, Any] = {"request": request, "job": None, "error": None, "at": time.time(),
                                  "sent": threading.Event()}
        with self._cond:
            self._unsent.append(record)
        self._touch()
        thread = threading.Thread(target=self._send_request, args=(record,), name="imagen4-panel-submit", daemon=True)
        thread.start()
        if wait:
            record["sent"].wait(30)
        return record

    def _send_request(self, record: dict) -> None:
        try:
            job = self.session.submit(record["request"], source="panel")
        except Imagen4Error as err:
            record["error"] = err
        except Exception as err:  # never lose a click silently
            record["error"] = Imagen4Error(f"{type(err).__name__}: {err}")
        else:
            record["job"] = job
            with self._cond:
                self.jobs.setdefault(id(job), job)
                self._mine_jobs.add(id(job))
                if record in self._unsent:
                    self._unsent.remove(record)
                if job.done() and job not in self._new_done:
                    self._new_done.append(job)
        record["sent"].set()
        self._touch()

    # == session events (poller thread) ============================================================
    def _on_job(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                return
            self.jobs.setdefault(id(job), job)
            if job.finished:  # the session tells of the final state before the job is done()
                if job not in self._new_done:
                    self._new_done.append(job)
                self._history_dirty = True
        self._touch()

    def _touch(self) -> None:
        """Mark the view dirty and make sure the refresher runs (it stops when nothing is running)."""
        with self._cond:
            self._dirty = True
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._refresher, name="imagen4-panel", daemon=True)
                self._thread.start()
            else:
                self._cond.notify_all()

    def _running(self) -> bool:
        return any(not j.done() for j in self.jobs.values()) or any(
            r["job"] is None and r["error"] is None for r in self._unsent)

    def _refresher(self) -> None:
        """Redraw at most ~8 times a second while something changes, once a second while tasks run."""
        while True:
            with self._cond:
                if not self._dirty:
                    if self._closed or not self._running():
                        self._thread = None
                        return
                    self._cond.wait(1.0)
                self._dirty = False
                finished, self._new_done = self._new_done, []
                history_due = self._history_dirty and self.tabs.selected_index == 1
            try:
                for job in finished:
                    self._add_finished(job)
                self.render_tasks()
                if history_due:
                    self.refresh_history()
            except Exception:  # a drawing problem must never kill the refresher
                import logging

                logging.getLogger("imagen4_jupyter").exception("panel refresh failed")
            time.sleep(0.12)

    # == task list =================================================================================
    def _progress(self, job: Job) -> float:
        if job.done():
            return 1.0
        if job.status == "generating" and job.first_generating_at:
            expected = sorted(self._expected_gen)[len(self._expected_gen) // 2] if self._expected_gen else 8.0
            return min(0.95, 0.3 + 0.65 * (time.time() - job.first_generating_at) / max(expected, 0.5))
        return {"submitted": 0.05, "waiting": 0.12, "queuing": 0.2}.get(job.status, 0.1)

    def task_rows(self) -> list[dict]:
        """What the task list shows, newest first: one dict per task or unsent submission."""
        rows = []
        with self._cond:
            jobs = list(self.jobs.values())
            unsent = list(self._unsent)
        for rec in reversed(unsent):
            req = rec["request"]
            if isinstance(rec["error"], OutcomeUnknownError):  # it may exist (and be billed): never resent
                state, words = "unknown", str(rec["error"])
            elif rec["error"] is not None:
                state, words = "unsent", f"not sent: {rec['error']}"
            else:
                state, words = "sending", ""
            rows.append({"task_id": None, "state": state, "elapsed": time.time() - rec["at"], "progress": 0.02,
                         "prompt": req.prompt, "error": words, "origin": "panel", "reused": False})
        for job in reversed(jobs):
            rows.append({"task_id": job.task_id, "state": job.status, "elapsed": job.elapsed,
                         "progress": self._progress(job), "prompt": job.request.prompt if job.request else "",
                         "error": str(job.error) if job.error is not None else "",
                         "origin": "panel" if id(job) in self._mine_jobs else "cell",
                         "reused": job.reused})
        return rows

    def render_tasks(self) -> None:
        rows = self.task_rows()
        if not rows:
            self.tasks_html.value = ""
            return
        running = sum(1 for r in rows if r["state"] not in ("success", "fail", "error", "unsent", "unknown"))
        parts = [f"<div class='imagen4-tasks-head'><b>Tasks</b> · {running} running · {len(rows)} in all</div>"]
        for r in rows[:30]:
            state = r["state"]
            word = STATE_WORDS.get(state, state)
            if r["reused"]:
                word = "stored"
            extra = ""
            if r["reused"]:
                extra = "<span>reused from history, nothing sent</span>"
            if r["error"]:
                extra = f"<span class='imagen4-err'>{esc(r['error'])}</span>"
            tid = f"<code>{esc(r['task_id'])}</code>" if r["task_id"] else ""
            prompt = esc(r["prompt"][:140])
            parts.append(
                f"<div class='imagen4-task imagen4-s-{esc(state)}'><span class='imagen4-badge'>{esc(word)}</span>"
                f"<span>{'' if r['reused'] else format(r['elapsed'], '.1f') + ' s'}</span>"
                f"<span class='imagen4-bar' title='{int(r['progress'] * 100)}%'>"
                f"<div style='width:{int(r['progress'] * 100)}%'></div></span>"
                f"<span class='imagen4-origin'>{r['origin']}</span>{tid}"
                f"<span class='imagen4-prompt-text'>{prompt}</span>{extra}</div>")
        self.tasks_html.value = "".join(parts)

    # == gallery ===================================================================================
    def _thumb(self, image: StoredImage, size: int) -> tuple[bytes, str]:
        key = f"{image.sha256}:{size}"
        if key not in self._thumbs:
            while len(self._thumbs) >= THUMB_CACHE:
                self._thumbs.pop(next(iter(self._thumbs)))
            self._thumbs[key] = preview(image.data, max_side=size)
        return self._thumbs[key]

    def _add_finished(self, job: Job) -> None:
        if job.error is None and job.request is not None and job.record is not None and job.record.cost_time_ms \
                and not job.reused:
            self._expected_gen.append(job.record.cost_time_ms / 1000)
        if job.error is not None or not job.images:
            return
        self.show_images(job)

    def show_images(self, job: Job) -> None:
        """Put a finished job's images at the front of the gallery."""
        with self._draw_lock:
            self._show_images(job)

    def _show_images(self, job: Job) -> None:
        known = {(j.task_id, im.sha256) for j, im in self.gallery_items}
        new = [(job, im) for im in job.images if (job.task_id, im.sha256) not in known]
        if not new:
            return
        self.gallery_items = (new + self.gallery_items)[:MAX_GALLERY]
        children = []
        for j, im in self.gallery_items:
            key = f"{j.task_id}:{im.sha256}"
            card = self._cards.get(key) or self._make_card(j, im)
            self._cards[key] = card
            children.append(card)
        keep = {f"{j.task_id}:{im.sha256}" for j, im in self.gallery_items}
        for key in [k for k in self._cards if k not in keep]:
            self._cards.pop(key).close()
        self.grid.children = tuple(children)
        self.gallery_note.value = f"<i>{len(children)} image(s), newest first. Click one for a larger view.</i>"

    def _make_card(self, job: Job, image: StoredImage) -> W.Widget:
        try:
            data, mime = self._thumb(image, self.thumb_size)
        except Exception:  # file gone or unreadable: still show the card
            data, mime = b"", "image/png"
        img = W.Image(value=data, format=mime.split("/")[-1],
                      layout=W.Layout(width=f"{self.thumb_size}px", height=f"{self.thumb_size}px"))
        img.add_class("imagen4-thumb")
        zoom = W.Button(tooltip="Larger view")
        zoom.add_class("imagen4-zoom")
        zoom.on_click(lambda _b, j=job, im=image: self.select((j, im)))
        req = job.request
        caption = W.HTML(f"{esc(req.aspect_ratio)} · seed {esc(req.seed) if req.seed else '—'}" if req else "")
        caption.add_class("imagen4-caption")
        box = W.Box([img, zoom])
        box.add_class("imagen4-thumb-box")
        card = W.VBox([box, caption])
        card.add_class("imagen4-card")
        return card

    def select(self, item: tuple[Job, StoredImage] | None) -> None:
        """Show one image in the larger view (None closes it)."""
        self.selected = item
        if item is None:
            self.viewer.layout.display = "none"
            return
        job, image = item
        try:
            data, mime = self._thumb(image, 768)
        except Exception as err:
            data, mime = b"", "image/png"
            self.view_status.value = f"<span class='imagen4-reason'>Cannot read {esc(image.path)}: {esc(err)}</span>"
        else:
            self.view_status.value = ""
        self.big.format = mime.split("/")[-1]
        self.big.value = data
        req = job.request
        self.big_info.value = (
            f"<code>{esc(job.task_id)}</code> · image {image.index + 1} · {image.width}×{image.height} · "
            f"{esc(req.aspect_ratio) if req else ''} · seed <b>{esc(req.seed) if req and req.seed else '—'}</b>"
            f"<br/><span class='imagen4-prompt-text'>{esc(req.prompt[:300]) if req else ''}</span>"
            f"<br/><small>{esc(image.path)}</small>")
        self.seed_copy.value = req.seed if req and req.seed else ""
        suffix = Path(image.path).suffix or ".png"
        self.save_path.value = str(Path.cwd() / f"imagen4-{job.task_id}-{image.index + 1}{suffix}")
        self.viewer.layout.display = "flex"
        self.tabs.selected_index = 0

    def save_selected(self, path: str | None = None) -> Path | None:
        """Copy the selected image's file to `path` (default: the "save as" box)."""
        if self.selected is None:
            return None
        _job, image = self.selected
        target = Path(path or self.save_path.value).expanduser()
        if not str(target).strip():
            self.view_status.value = "<span class='imagen4-reason'>Type a file path first.</span>"
            return None
        try:
            if target.is_dir():
                target = target / Path(image.path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image.path, target)
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            self.view_status.value = f"<span class='imagen4-reason'>Not saved: {esc(err)}</span>"
            return None
        self.view_status.value = f"Saved to <code>{esc(target)}</code>"
        return target

    def copy_selected_seed(self) -> str | None:
        if self.selected is None:
            return None
        req = self.selected[0].request
        if not req or not req.seed:
            self.view_status.value = "This task was sent without a seed."
            return None
        self.seed_copy.value = req.seed
        self._run_js(copy_js(req.seed, uuid.uuid4().hex, int(time.time() * 1000)))
        self.view_status.value = f"Seed <b>{esc(req.seed)}</b> copied (it is also selected in the box)."
        return req.seed

    # == insert as code ============================================================================
    def code_request(self) -> GenerationRequest | None:
        """The request "Insert as code" writes: the selected image's, else the latest task's, else the controls'."""
        if self.selected is not None and self.selected[0].request is not None:
            return self.selected[0].request
        with self._cond:
            mine_ids = self.mine
            mine = [j for j in self.jobs.values() if j.task_id in mine_ids and j.request is not None]
            sent = [r["request"] for r in self._unsent if r["error"] is None]
        if sent:
            return sent[-1]
        if mine:
            return mine[-1].request
        try:
            return self.current_request()
        except InvalidRequestError as err:
            self.insert_status.value = f"<span class='imagen4-reason'>Nothing to insert: {esc(err)}</span>"
            return None

    def insert_code(self) -> str | None:
        """Insert the `%%imagen4` cell below this one (JupyterLab 4 / Notebook 7) and show it for copying."""
        request = self.code_request()
        if request is None:
            return None
        code = cell_code(request)
        self.code.value = code
        self.code.rows = min(12, code.count("\n") + 1)
        self.code.layout.display = "flex"
        self._insert_token = uuid.uuid4().hex
        problem = code_problem(request)
        self._insert_note = f" <span class='imagen4-reason'>Note: {esc(problem)}.</span>" if problem else ""
        self.insert_status.value = ("Inserting the cell below… (if none appears, copy the code from the box)"
                                    + self._insert_note)
        self._run_js(insert_js(code, self._insert_token, int(time.time() * 1000)))
        return code

    def _on_insert_report(self, change: dict) -> None:
        token, _, message = str(change["new"]).partition(" ")
        if not token or token != self._insert_token:
            return
        self.js_out.outputs = ()
        if message == "ok":
            self.insert_status.value = ("Inserted the <code>%%imagen4</code> cell below. The code is also here:"
                                        + self._insert_note)
        else:
            self.insert_status.value = (f"<span class='imagen4-reason'>Could not insert a cell "
                                        f"({esc(message.removeprefix('fail: '))}); copy the code from the box."
                                        "</span>")

    def _run_js(self, js: str) -> None:
        self.js_out.outputs = ({"output_type": "display_data",
                                "data": {"application/javascript": js, "text/plain": "<imagen4 script>"},
                                "metadata": {}},)

    # == history tab ===============================================================================
    def _on_tab(self, change: dict) -> None:
        if change["new"] == 1:
            self.request_history()

    def request_history(self) -> None:
        """Redraw the history tab soon, on the refresher thread (thumbnails take time; the kernel stays free)."""
        with self._cond:
            self._history_dirty = True
        self._touch()

    def history_entries(self) -> list[TaskEntry]:
        return self.session.history.search(self.history_search.value.strip() or None, limit=self.history_limit)

    def refresh_history(self) -> None:
        """Redraw the history tab from the session's history (newest first, filtered by the search box)."""
        with self._draw_lock:
            self._refresh_history()

    def _refresh_history(self) -> None:
        with self._cond:
            self._history_dirty = False
        entries = self.history_entries()
        self.history_where.value = (f"<small>{len(entries)} task(s) shown from "
                                    f"<code>{esc(self.session.history.path)}</code></small>")
        rows = []
        for entry in entries:
            stamp = f"{entry.state}:{len(entry.images)}:{bool(entry.error)}"
            cached = self._history_rows.get(entry.task_id)
            if cached is None or cached[0] != stamp:
                if cached is not None:
                    cached[1].close()
                cached = (stamp, self._history_row(entry))
                self._history_rows[entry.task_id] = cached
            rows.append(cached[1])
        if not rows:
            rows = [W.HTML("<i>No tasks in this notebook's history yet.</i>" if not self.history_search.value
                           else "<i>No task matches.</i>")]
        self.history_list.children = tuple(rows)

    def _history_row(self, entry: TaskEntry) -> W.Widget:
        req = entry.request or {}
        thumbs = []
        images: list[StoredImage] = []
        if entry.state == "success":
            try:
                images = self.session.history.stored_images(entry)
            except Exception:
                images = []
        for image in images[:MAX_IMAGES]:
            try:
                data, mime = self._thumb(image, 96)
            except Exception:
                continue
            thumb = W.Image(value=data, format=mime.split("/")[-1], layout=W.Layout(width="72px", height="72px"))
            thumb.add_class("imagen4-history-thumb")
            thumbs.append(thumb)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.submitted_at)) if entry.submitted_at else ""
        error = f" · <span class='imagen4-reason'>{esc(entry.error.get('message'))}</span>" if entry.error else ""
        info = W.HTML(
            f"<div><b>{esc(STATE_WORDS.get(entry.state, entry.state))}</b> · {esc(when)} · "
            f"{esc(req.get('aspect_ratio', ''))} · {esc(req.get('num_images', ''))} image(s) · "
            f"seed {esc(req.get('seed') or '—')} · {esc(entry.source or '')} · <code>{esc(entry.task_id)}</code>"
            f"{error}</div><div class='imagen4-prompt-text'>{esc((req.get('prompt') or '')[:200])}</div>",
            layout=W.Layout(flex="1"))
        reuse = W.Button(description="Reuse settings", icon="undo", layout=W.Layout(width="auto"),
                         disabled=not req)
        reuse.add_class("imagen4-history-reuse")
        reuse.on_click(lambda _b, r=req: self.reuse_settings(r))
        buttons = [reuse]
        if images:
            show = W.Button(description="Show", icon="image", layout=W.Layout(width="auto"))
            show.add_class("imagen4-history-show")
            show.on_click(lambda _b, e=entry: self._show_entry(e))
            buttons.append(show)
        row = W.HBox([W.HBox(thumbs), info, W.VBox(buttons)], layout=W.Layout(align_items="center"))
        row.add_class("imagen4-history-row")
        row.add_class("imagen4-row")
        return row

    def _show_entry(self, entry: TaskEntry) -> None:
        job = self.session.job_from_history(entry)
        if job.images:
            self.show_images(job)
            self.select((job, job.images[0]))

    # == lifetime ==================================================================================
    def close(self) -> None:
        """Stop listening to the session and close every widget of the panel."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.session.unsubscribe(self._on_job)
        for _key, card in list(self._cards.items()):
            card.close()
        for _stamp, row in list(self._history_rows.values()):
            row.close()
        super().close()
