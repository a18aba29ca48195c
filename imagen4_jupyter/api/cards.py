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

from .store import thumbnail

STATE_COLOURS = {"submitted": "#6b7280", "waiting": "#6b7280", "queuing": "#6b7280", "generating": "#2563eb",
                 "success": "#15803d", "fail": "#b91c1c", "error": "#b91c1c", "reused": "#15803d"}
CARD_STYLE = ("font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;padding:4px 8px;"
              "border-left:3px solid {colour};margin:2px 0")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def shorten(text: str | None, limit: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


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
    """`16:9 · 2 images · seed 7` for a GenerationRequest or its dict."""
    if request is None:
        return ""
    get = request.get if isinstance(request, dict) else (lambda k, d=None: getattr(request, k, d))
    n = int(get("num_images", 1) or 1)
    parts = [str(get("aspect_ratio", "1:1")), f"{n} image{'s' if n != 1 else ''}"]
    if get("seed") not in (None, ""):
        parts.append(f"seed {get('seed')}")
    if get("negative_prompt"):
        parts.append("negative: " + shorten(get("negative_prompt"), 60))
    return " · ".join(parts)


# -- the live status card ------------------------------------------------------------------------
def card_bundle(job: Any, *, note: str = "") -> dict[str, str]:
    """The status card of one task: state, task id, elapsed time, prompt; an error line when it failed."""
    status = job.status
    colour = STATE_COLOURS.get(status, "#6b7280")
    prompt = job.request.prompt if job.request else ""
    if job.error is not None:
        title = getattr(job.error, "title", type(job.error).__name__)
        text = f"[imagen4] {title}: {job.error}"
        tid = "" if job.task_id in str(job.error) else f"task <code>{esc(job.task_id)}</code> · "
        body = (f"<b style='color:{colour}'>✗ {esc(title)}</b>: {esc(job.error)}"
                f"<br/><span style='color:#6b7280'>{tid}{job.elapsed:.1f} s · {esc(shorten(prompt, 80))}</span>")
        if job.task_id not in text:
            text += f" (task {job.task_id})"
    else:
        finished = status == "success" and job.finished
        label = "done" if finished else "downloading" if status == "success" else status
        icon = "✓" if finished else "⏳"
        text = f"[imagen4] {job.task_id}: {label} ({job.elapsed:.1f} s) {shorten(prompt, 80)!r}"
        body = (f"{icon} <b style='color:{colour}'>{esc(label)}</b> · <code>{esc(job.task_id)}</code> · "
                f"{job.elapsed:.1f} s · {esc(params_text(job.request))}"
                f"<br/><span style='color:#374151'>{esc(shorten(prompt, 160))}</span>")
    if note:
        text += f"\n{note}"
        body += f"<br/><span style='color:#6b7280'>{esc(note)}</span>"
    return {"text/plain": text,
            "text/html": f"<div class='imagen4-card imagen4-{esc(status)}' data-task-id='{esc(job.task_id)}' "
                         f"style='{CARD_STYLE.format(colour=colour)}'>{body}</div>"}


def reused_bundle(job: Any, submitted_at: float | None, origin: str | None = None) -> dict[str, str]:
    """One line: the images come from the history (`origin`: another notebook's) and no request was sent."""
    n = len(job.images)
    source = f"{origin} ({when(submitted_at)})" if origin else when(submitted_at)
    text = (f"Reused {n} image{'s' if n != 1 else ''} of task {job.task_id} from {source}; "
            "no request sent (--force makes a new task).")
    return {"text/plain": "[imagen4] " + text,
            "text/html": f"<div class='imagen4-card imagen4-reused' data-task-id='{esc(job.task_id)}' "
                         f"style='{CARD_STYLE.format(colour=STATE_COLOURS['reused'])}'>♻ {esc(text)}</div>"}


def slot_bundle() -> dict[str, str]:
    """An empty placeholder output that a finished image replaces (by display id)."""
    return {"text/plain": "", "text/html": "<div class='imagen4-slot'></div>"}


def message_bundle(text: str, kind: str = "info") -> dict[str, str]:
    colour = {"info": "#6b7280", "ok": "#15803d", "error": "#b91c1c"}.get(kind, "#6b7280")
    return {"text/plain": f"[imagen4] {text}",
            "text/html": f"<div class='imagen4-message' style='{CARD_STYLE.format(colour=colour)}'>"
                         f"{esc(text)}</div>"}


# -- thumbnails and rich reprs of Job and Result ---------------------------------------------
def thumb_html(path: Any, side: int = 72) -> str:
    """An inline <img> of a small preview (cached, see `thumbnail`), named by the file's name only."""
    try:
        data, mime = thumbnail(path, side)
        return (f"<img src='data:{mime};base64,{base64.b64encode(data).decode()}' "
                f"style='max-width:{side}px;max-height:{side}px;margin:1px' alt='{esc(Path(path).name)}'/>")
    except Exception:
        return "<span style='color:#9ca3af'>(missing)</span>"


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
