"""HTML and text cards of jobs and results: the status card, the reused line, messages, thumbnails.

Pure functions over duck-typed jobs (anything with `task_id`, `status`, `request`, `error`, `images`, `elapsed`
and `finished`: the outcome is known, which a `Job` is already while its change callbacks draw the final card),
so `Job` and `Result` can render themselves and every front-end shows the same card. All user text is
HTML-escaped; rich bundles always carry `text/plain` too.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from .models import DEFAULT_MODEL, short_name
from .spend import cost_text
from .store import thumbnail

# Colours are JupyterLab's theme variables (light fallbacks for other front-ends), so a card reads well in light
# and dark themes. Text is drawn only in the font colours (at least 4.5:1 against the theme's backgrounds); the
# state colours mark the left border and a small shape, never text, and no glyph needs an emoji font.
FG = "var(--jp-ui-font-color1,#1f2937)"
FG2 = "var(--jp-content-font-color2,#4b5563)"
GREY = "var(--jp-border-color1,#9ca3af)"
BLUE = "var(--jp-brand-color1,#1976d2)"
GREEN = "var(--jp-success-color1,#2e7d32)"
RED = "var(--jp-error-color1,#c62828)"
STATE_COLOURS = {"pacing": GREY, "sending": GREY,
                 "submitted": GREY, "waiting": GREY, "queuing": GREY, "generating": BLUE, "success": GREEN,
                 "fail": RED, "error": RED, "reused": GREEN}
RUNNING = ("pacing", "sending", "submitted", "waiting", "queuing", "generating")
CARD_STYLE = ("font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;line-height:1.5;padding:4px 8px;"
              f"color:{FG};border-left:3px solid {{colour}};margin:2px 0;max-width:100%;box-sizing:border-box;"
              "overflow-wrap:anywhere")
# one line that ends in an ellipsis (the whole text is its title, shown on hover)
LINE_STYLE = (f"color:{FG2};display:inline-block;max-width:100%;overflow:hidden;text-overflow:ellipsis;"
              "white-space:nowrap;vertical-align:bottom")
# A task's images side by side in its cell: each image is a native output of its own (with its `imagen4`
# metadata and a display width, `outputs.image_output`); in an output area holding a card they flow in a
# wrapping row. Without this style (an untrusted notebook), they stack at that width.
_AREA = ".jp-OutputArea:has(>.jp-OutputArea-child .imagen4-card)"
_IMAGE = ".jp-OutputArea-child:has(.jp-RenderedImage)"
# A live card animates only for LIVE_SECONDS after its last update (each update draws it anew): a card nobody
# updates any more (kernel restarted, page reloaded, notebook saved) stops turning by itself, and its "stopped
# changing?" line (hidden while the card is fresh; shown where styles are dropped) says what to run.
LIVE_SECONDS = 8
CELL_CSS = (
    "<style>@keyframes imagen4-spin{to{transform:rotate(360deg)}}"
    "@keyframes imagen4-fresh{from,to{visibility:hidden;display:none}}"
    "@keyframes imagen4-still{to{border-right-color:var(--imagen4-ring)}}"
    # the outputs flow in a wrapping row, indented as one block by the prompt's width (the empty prompts of
    # display outputs are hidden, so an image that wraps onto a new line lines up with the one above)
    f"{_AREA}{{display:flex;flex-flow:row wrap;align-items:flex-start;gap:4px 8px;"
    "padding-left:var(--jp-cell-prompt-width,64px);box-sizing:border-box}"
    f"{_AREA}>.jp-OutputArea-child{{flex:1 1 100%;min-width:0}}"
    f"{_AREA}>.jp-OutputArea-child>.jp-OutputPrompt:empty{{display:none}}"
    f"{_AREA}>{_IMAGE}{{flex:0 1 auto;width:auto;max-width:100%}}"
    f"{_AREA}>{_IMAGE}>.jp-OutputArea-output{{width:auto;flex:0 1 auto}}"
    ".imagen4-card code{color:inherit}</style>")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def shorten(text: str | None, limit: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


# -- pieces of tables that fit the space they get (history, batch, panel) ----------------------------
# A cell's text on one line, cut with an ellipsis where its column ends (the whole text on hover).
CLIP = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap;min-width:0"
TID_STYLE = "font-family:var(--jp-code-font-family,monospace);font-size:11px;color:inherit"


def task_id_html(task_id: str | None, tail: int = 6) -> str:
    """A task id that never breaks mid-token: where it does not fit, its middle gives way to an ellipsis
    (`task_goo…087861`). The whole id is its title (hover) and its text (a copy takes all of it)."""
    if not task_id:
        return ""
    head, end = (task_id[:-tail], task_id[-tail:]) if len(task_id) > tail + 3 else (task_id, "")
    # inline boxes only (no flex): a copy, and innerText, give the id on one line, whole
    return (f"<span class='imagen4-tid' title='{esc(task_id)}' style='display:inline-block;max-width:100%;"
            f"white-space:nowrap;vertical-align:bottom;{TID_STYLE}'><span style='display:inline-block;"
            f"max-width:calc(100% - {len(end)}ch);overflow:hidden;text-overflow:ellipsis;white-space:nowrap;"
            f"vertical-align:bottom'>{esc(head)}</span>{esc(end)}</span>")


def short_when(ts: float | None) -> str:
    """`6 Dec 21:40` this year, `6 Dec 2025` before: a date that fits a narrow column."""
    if not ts:
        return "?"
    at = time.localtime(ts)
    day = f"{at.tm_mday} {time.strftime('%b', at)}"
    return f"{day} {time.strftime('%H:%M', at)}" if at.tm_year == time.localtime().tm_year else f"{day} {at.tm_year}"


def when_html(ts: float | None) -> str:
    """A date on one line that never wraps (`6 Dec 21:40`); the whole date and time on hover."""
    return (f"<span class='imagen4-when' title='{esc(when(ts))}' style='white-space:nowrap'>"
            f"{esc(short_when(ts))}</span>")


def clip_line(text: str, limit: int = 300, style: str = "") -> str:
    """`text` on one line that ends in an ellipsis where the width ends; the whole text on hover."""
    return (f"<div style='{CLIP};{style}' title='{esc(shorten(text, 2000))}'>{esc(shorten(text, limit))}</div>")


# Where the output is wide enough (a container query; `<style>` holds in trusted outputs, the inline widths are
# the narrow layout everywhere else), the task id column shows the whole id and thumbnails grow.
WIDE_OUTPUT = 640  # px of the table's container
THUMBS_WIDTH = "60px"  # a table's thumbnails column (narrow; WIDE_THUMBS wide)
WIDE_THUMBS = 84
TASK_ID_WIDTH = "84px"  # a table's task id column: its two ends in a narrow output (the whole id when wide)
WIDE_TASK_ID = 186


def fit_table(columns: list[tuple[str, str]], rows: list[list[str]], css_class: str) -> str:
    """A table as wide as its output and never wider: `columns` are (header, width); the one with an empty
    width (the prompt) takes what the others leave and gives way first, its lines ending in an ellipsis. The
    key columns keep their fixed widths, so they stay in view beside a file browser; in an output wider than
    WIDE_OUTPUT px the task id column shows the whole id and the thumbnails are larger."""
    cell = (f"text-align:left;vertical-align:top;padding:3px 4px;color:{FG};overflow:hidden;"
            "border-bottom:1px solid var(--jp-border-color2,#e0e0e0)")
    kinds = {"task id": "imagen4-col-tid", "images": "imagen4-col-images"}
    cols = "".join(f"<col class='{kinds.get(h, '')}' style='width:{w}'/>" if w else "<col/>" for h, w in columns)
    th = f"{cell};font-weight:600;font-size:11px;white-space:nowrap;text-overflow:ellipsis"
    head = "".join(f"<th style='{th}'>{esc(h)}</th>" for h, _w in columns)
    body = "".join("<tr>" + "".join(f"<td style='{cell}'>{c}</td>" for c in row) + "</tr>" for row in rows)
    t = f"table.{css_class}"
    wide = (f"<style>.imagen4-fit{{container-type:inline-size}}@container (min-width:{WIDE_OUTPUT}px){{"
            f"{t} col.imagen4-col-tid{{width:{WIDE_TASK_ID}px!important}}"
            f"{t} col.imagen4-col-images{{width:{WIDE_THUMBS}px!important}}"
            f"{t} img.imagen4-small{{max-width:36px!important;max-height:36px!important}}"
            f"{t} img.imagen4-small:only-child{{max-width:72px!important;max-height:72px!important}}}}</style>")
    return (f"{wide}<div class='imagen4-fit'><table class='{css_class}' style='border-collapse:collapse;"
            "table-layout:fixed;width:100%;font-size:12px;margin-top:4px'>"
            f"<colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def thumbs_html(paths: list[Any], alts: list[str] | None = None) -> str:
    """A row's thumbnails in a THUMBS_WIDTH column: one at 50 px, more as a 2×2 grid of 24 px; each whole, at its
    ratio."""
    side = 50 if len(paths) <= 1 else 24
    alts = alts or [""] * len(paths)
    return "".join(thumb_html(p, 72, alt, shown=side) for p, alt in zip(paths[:4], alts, strict=False))


def plural(n: int, word: str) -> str:
    """`1 task`, `2 tasks`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def shown_path(path: Any, base: Any = None) -> str:
    """How an image file is named in an output that is saved with the notebook: relative to `base` (the
    notebook's folder) when it is inside it, so the notebook holds no home directory or user name and still
    names the files after the folder moves; absolute when outside it or without a base."""
    if base is None:
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except (ValueError, OSError):
        return str(path)


def params_text(request: Any) -> str:
    """`standard · 16:9 · 2 images · seed 7` for a GenerationRequest or its dict: every card and row names its
    model (a dict without one is the standard model's)."""
    if request is None:
        return ""
    get = request.get if isinstance(request, dict) else (lambda k, d=None: getattr(request, k, d))
    n = int(get("num_images", 1) or 1)
    parts = [str(get("aspect_ratio", "1:1")), plural(n, "image")]
    parts.insert(0, short_name(get("model") or DEFAULT_MODEL))
    if get("seed") not in (None, ""):
        parts.append(f"seed {get('seed')}")
    if get("negative_prompt"):
        parts.append("negative: " + shorten(get("negative_prompt"), 60))
    return " · ".join(parts)


def params_html(params: str) -> str:
    """`params_text` (and a cost) escaped for a card, where `6 credits` never breaks between its words."""
    return esc(params).replace(" credits", "&nbsp;credits")


def mark_html(status: str, colour: str) -> str:
    """The state's small shape before its word: a turning ring while the task runs, a dot once it ended."""
    base = "display:inline-block;box-sizing:border-box;width:10px;height:10px;border-radius:50%;margin-right:6px;"
    if status in RUNNING:
        # turns for LIVE_SECONDS, then closes into a still ring (nothing updates the card: it is not turning)
        return (f"<span class='imagen4-mark' style='{base}border:2px solid {colour};border-right-color:transparent;"
                f"--imagen4-ring:{colour};animation:imagen4-spin 1s linear {LIVE_SECONDS},"
                f"imagen4-still 0s {LIVE_SECONDS}s forwards'></span>")
    return f"<span class='imagen4-mark' style='{base}background:{colour}'></span>"


def prompt_line(prompt: str, limit: int = 300) -> str:
    """The prompt on one line, cut with an ellipsis where the width ends; the whole prompt on hover."""
    return (f"<span class='imagen4-card-prompt' style='{LINE_STYLE}' title='{esc(shorten(prompt, 2000))}'>"
            f"{esc(shorten(prompt, limit))}</span>")


SIMULATED_NOTE = "simulated: made by a simulator, nothing is billed"


def simulated_line(simulated: bool) -> tuple[str, str]:
    """The card's simulated mark, as (text line, html line); empty for the real service."""
    if not simulated:
        return "", ""
    return (f"\n{SIMULATED_NOTE}", f"<br/><span class='imagen4-simulated' style='color:{FG2}'><b>simulated</b>"
                                   f"{esc(SIMULATED_NOTE.removeprefix('simulated'))}</span>")


def stale_hint(job: Any) -> tuple[str, str]:
    """What to run when a running task's card stops changing: (now, after a kernel restart)."""
    return (f"%imagen4 show {job.task_id}" if job.task_id else "%imagen4 wait"), "%imagen4 resume"


def stale_line(job: Any, updated: float) -> tuple[str, str]:
    """A running card's last line, as (text, html): when it was last updated, and what to run if it stopped
    changing (the html hides that part while the card is fresh: see LIVE_SECONDS)."""
    at = time.strftime("%H:%M:%S", time.localtime(updated))
    now, restarted = stale_hint(job)
    return (f"\nupdated {at}; if it stops changing: {now} (after a kernel restart: {restarted})",
            f"<br/><span class='imagen4-updated' style='color:{FG2};font-size:12px'>updated {at}"
            f"<span class='imagen4-stale' style='animation:imagen4-fresh {LIVE_SECONDS}s steps(1) 1'>; stopped "
            f"changing? run <code>{esc(now)}</code>, or <code>{restarted}</code> after a kernel restart</span></span>")


def _card(job: Any, status: str, body: str, updated: float | None = None) -> str:
    colour = STATE_COLOURS.get(status, GREY)
    stamp = f" data-updated='{round(updated * 1000)}'" if updated is not None else ""
    return (f"{CELL_CSS}<div class='imagen4-card imagen4-{esc(status)}' data-task-id='{esc(job.task_id)}'{stamp} "
            f"style='{CARD_STYLE.format(colour=colour)}'>{body}</div>")


# -- the live status card ------------------------------------------------------------------------
def card_bundle(job: Any, *, note: str = "", simulated: bool = False) -> dict[str, str]:
    """The status card of one task: state, task id, elapsed time, parameters, prompt; an error line when it
    failed; a `simulated` line when a simulator made it."""
    status = job.status
    colour = STATE_COLOURS.get(status, GREY)
    prompt = job.request.prompt if job.request else ""
    cost = cost_text(getattr(job, "cost", None))  # "~6 credits" (an estimate) or "6 credits" (measured)
    params = " · ".join(p for p in (params_text(job.request), cost) if p)
    shown = params_html(params)
    if job.error is not None:
        title = getattr(job.error, "title", type(job.error).__name__)
        text = f"[imagen4] {title}: {job.error}" + (f" ({cost})" if cost else "")
        tid = "" if job.task_id is None or job.task_id in str(job.error) else f"task <code>{esc(job.task_id)}</code> · "
        body = (f"{mark_html(status, colour)}<b>✗ {esc(title)}</b>: {esc(job.error)}"
                f"<br/><span style='color:{FG2}'>{tid}{job.elapsed:.1f}&nbsp;s · {shown}</span>"
                f"<br/>{prompt_line(prompt)}")
        if job.task_id is not None and job.task_id not in text:
            text += f" (task {job.task_id})"
    else:
        finished = status == "success" and job.finished
        label = "done" if finished else "downloading" if status == "success" else status
        if status == "pacing":  # in the local send queue (api/sending.py): nothing sent yet
            wait = max(0.0, (job.send_at or 0.0) - time.time())
            label = f"waiting for a slot under the rate limit (~{wait:.0f} s)" if wait >= 1 else "queued"
        shown_id = job.task_id or "not sent yet"
        spent = f", {cost}" if cost else ""
        text = f"[imagen4] {shown_id}: {label} ({job.elapsed:.1f} s{spent}) {shorten(prompt, 80)!r}"
        turning = "generating" if label == "downloading" else status  # the ring turns until the images are in
        body = (f"{mark_html(turning, colour)}"
                f"<b>{'✓ ' if finished else ''}{esc(label)}</b> · <code>{esc(shown_id)}</code> · "
                f"{job.elapsed:.1f}&nbsp;s · {shown}<br/>{prompt_line(prompt)}")
    if note:
        text += f"\n{note}"
        body += f"<br/><span style='color:{FG2}'>{esc(note)}</span>"
    sim_text, sim_html = simulated_line(simulated)
    text, body = text + sim_text, body + sim_html
    updated = time.time()
    if job.error is None and not (status == "success" and job.finished):  # still running: it may stop changing
        stale_text, stale_html = stale_line(job, updated)
        text, body = text + stale_text, body + stale_html
    return {"text/plain": text, "text/html": _card(job, status, body, updated)}


def reused_bundle(job: Any, submitted_at: float | None, origin: str | None = None, *,
                  simulated: bool = False) -> dict[str, str]:
    """The card of images taken from the history (`origin`: another notebook's; no request sent): the task, its
    parameters and prompt; a `simulated` line when a simulator made them."""
    n = len(job.images)
    prompt = job.request.prompt if job.request else ""
    params = params_text(job.request) + " · 0 credits"  # no request sent: nothing spent
    source = f"{origin} ({when(submitted_at)})" if origin else when(submitted_at)
    text = (f"Reused {plural(n, 'image')} of task {job.task_id} from {source}; "
            "no request sent (--force makes a new task).")
    plain = f"[imagen4] {text}" + (f"\n{params} {shorten(prompt, 80)!r}" if job.request else "")
    body = (f"{mark_html('reused', STATE_COLOURS['reused'])}<b>reused</b> · <code>{esc(job.task_id)}</code> · "
            f"{params_html(params)}<br/>{prompt_line(prompt)}<br/>"
            f"<span style='color:{FG2}'>{plural(n, 'image')} from the "
            f"history, made {esc(when(submitted_at))}; no request sent (--force makes a new task).</span>")
    sim_text, sim_html = simulated_line(simulated)
    return {"text/plain": plain + sim_text, "text/html": _card(job, "reused", body + sim_html)}


def slot_bundle() -> dict[str, str]:
    """An empty placeholder output that a finished image replaces (by display id)."""
    return {"text/plain": "", "text/html": "<div class='imagen4-slot'></div>"}


def message_bundle(text: str, kind: str = "info") -> dict[str, str]:
    colour = {"info": GREY, "ok": GREEN, "error": RED}.get(kind, GREY)
    return {"text/plain": f"[imagen4] {text}",
            "text/html": f"<div class='imagen4-message imagen4-message-{esc(kind)}' "
                         f"style='{CARD_STYLE.format(colour=colour)}'>{esc(text)}</div>"}


# -- thumbnails and rich reprs of Job and Result ---------------------------------------------
def thumb_html(path: Any, side: int = 72, alt: str = "", shown: int | None = None) -> str:
    """An inline <img> of a small preview (cached, see `thumbnail`) of `side` px, shown at most `shown` px (its
    ratio kept); its alt text is `alt`, else the file's name."""
    shown = shown or side
    try:
        data, mime = thumbnail(path, side)
        return (f"<img class='imagen4-small' src='data:{mime};base64,{base64.b64encode(data).decode()}' "
                f"style='max-width:{shown}px;max-height:{shown}px;width:auto;height:auto;margin:1px;"
                "vertical-align:top' "
                f"alt='{esc(alt or Path(path).name)}'/>")
    except Exception:
        return f"<span style='color:{FG2}'>(missing)</span>"


def job_html(job: Any) -> str:
    """A job's card, with its images once it finished successfully."""
    html_card = card_bundle(job)["text/html"]
    if job.images and job.finished and job.error is None:
        html_card += result_html(job)
    return html_card


def result_html(result: Any, max_side: int = 256) -> str:
    """The task id and a preview of every image of a Result (or a finished job)."""
    imgs = "".join(thumb_html(im.path, max_side) for im in result.images)
    return f"<div class='imagen4-result'><code>{esc(result.task_id)}</code><br/>{imgs}</div>"
