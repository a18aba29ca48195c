"""Everything a person sees: status cards, image outputs with metadata, history tables, text fallbacks.

Pure functions that build MIME bundles (dicts); publishing them is the caller's business. All user text
is HTML-escaped. Rich bundles always carry `text/plain` too, so terminals and logs read them.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .images import is_sha256, preview, sniff, write_atomic
from .request import MODEL

if TYPE_CHECKING:
    from .history import History, TaskEntry
    from .images import StoredImage
    from .task import Job, Result, TaskRecord

EMBED_MODES = ("preview", "full", "none")
NATIVE = ("image/png", "image/jpeg")
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
def card_bundle(job: "Job", *, note: str = "") -> dict[str, str]:
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
        finished = status == "success" and job.done()
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


def reused_bundle(job: "Job", submitted_at: float | None) -> dict[str, str]:
    """One line: the images come from the history and no request was sent."""
    n = len(job.images)
    text = (f"Reused {n} image{'s' if n != 1 else ''} of task {job.task_id} from {when(submitted_at)}; "
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


# -- image outputs ---------------------------------------------------------------------------------
def image_metadata(job: "Job", image: "StoredImage", embed: str, *, embedded_mime: str | None = None,
                   embedded_sha256: str | None = None, base: Any = None) -> dict:
    """Provenance stored with each image output under the key `imagen4`; `path` as `shown_path` gives it
    (relative to the notebook's folder `base` when inside it)."""
    rec = job.record
    return {
        "task_id": job.task_id,
        "request": job.request.to_dict() if job.request else None,
        "model": (rec.model if rec and rec.model else MODEL),
        "index": image.index,
        "sha256": image.sha256,
        "mime": image.mime,
        "width": image.width,
        "height": image.height,
        "size": image.size,
        "path": shown_path(image.path, base),
        "embed": embed,
        "embedded_mime": embedded_mime,
        "embedded_sha256": embedded_sha256,
        "reused": bool(job.reused),
        "times": {
            "submitted": job.created_at,
            "finished": job.finished_at,
            "create_time_ms": rec.create_time_ms if rec else None,
            "complete_time_ms": rec.complete_time_ms if rec else None,
            "cost_time_ms": rec.cost_time_ms if rec else None,
        },
    }


def _as_native(data: bytes, mime: str) -> tuple[bytes, str]:
    """Notebook-native image bytes: PNG and JPEG pass through; anything else becomes PNG."""
    if mime in NATIVE:
        return data, mime
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.save(out, format="PNG")
    return out.getvalue(), "image/png"


def image_output(job: "Job", image: "StoredImage", embed: str = "preview",
                 preview_size: int = 768, *, base: Any = None) -> tuple[dict[str, str], dict]:
    """(data, metadata) for one image: native `image/png` / `image/jpeg`, or paths only for `none`. File paths
    are relative to `base` (the notebook's folder) when inside it (`shown_path`)."""
    path = shown_path(image.path, base)
    if embed == "none":
        meta = image_metadata(job, image, embed, base=base)
        text = f"{path} ({image.width}×{image.height}, sha256 {image.sha256[:12]}…)"
        return ({"text/plain": text, "text/markdown": f"`{path}` ({image.width}×{image.height})"},
                {"imagen4": meta})
    raw = image.data
    if embed == "full":
        data, mime = _as_native(raw, image.mime)
    else:
        data, mime = preview(raw, preview_size)
        data, mime = _as_native(data, mime)
    meta = image_metadata(job, image, embed, embedded_mime=mime, embedded_sha256=hashlib.sha256(data).hexdigest(),
                          base=base)
    return ({mime: base64.b64encode(data).decode("ascii"), "text/plain": f"<image {path}>"}, {"imagen4": meta})


# -- subcommand views ---------------------------------------------------------------------------------
def thumbnail(path: Any, side: int = 72) -> tuple[bytes, str]:
    """(bytes, mime) of a small preview of an image file; one from the image store (named by its sha256) is
    cached on disk in `.thumbs/` beside it.

    Decoding a 1024x1024 PNG costs ~20 ms, so a history page of 20 tasks would take most of a second; the
    cached copy is a ~3 KB read. It is remade when the image file is newer than it.
    """
    path = Path(path)
    if not is_sha256(path.stem):
        return preview(path.read_bytes(), side, quality=70)  # not a store file: no cache folder beside it
    cached = path.parent / ".thumbs" / f"{path.stem}-{side}"
    try:
        if cached.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            data = cached.read_bytes()
            mime = sniff(data)
            if mime:
                return data, mime
    except OSError:
        pass
    data, mime = preview(path.read_bytes(), side, quality=70)
    try:
        cached.parent.mkdir(exist_ok=True)
        write_atomic(cached, data)
    except OSError:  # a read-only folder or a full disk: no cache, same picture
        pass
    return data, mime


def thumb_html(path: Any, side: int = 72) -> str:
    """An inline <img> of a small preview (cached, see `thumbnail`), named by the file's name only."""
    try:
        data, mime = thumbnail(path, side)
        return (f"<img src='data:{mime};base64,{base64.b64encode(data).decode()}' "
                f"style='max-width:{side}px;max-height:{side}px;margin:1px' alt='{esc(Path(path).name)}'/>")
    except Exception:
        return "<span style='color:#9ca3af'>(missing)</span>"


def history_bundle(entries: list["TaskEntry"], history: "History", *, thumbnails: bool = True,
                   title: str = "", base: Any = None) -> dict[str, str]:
    """A table of history entries: time, prompt, parameters, state, task id, thumbnails; the text form names
    the image files (relative to `base`, the notebook's folder, when inside it)."""
    rows, lines = [], []
    for e in entries:
        req = e.request or {}
        prompt = req.get("prompt") or ""
        state = e.state
        if e.error is not None:
            message = str(e.error.get("message") or "")
            if "The service said:" in message:  # the service's own words say more than our hint
                message = message.split("The service said:", 1)[1]
            state = f"{e.state}: {shorten(message, 80)}"
        thumbs = ""
        if thumbnails and e.state == "success":
            thumbs = "".join(thumb_html(im.path) for im in history.stored_images(e))  # content-addressed only
        rows.append(f"<tr><td>{esc(when(e.submitted_at))}</td><td style='text-align:left'>"
                    f"{esc(shorten(prompt, 200))}</td><td>{esc(params_text(req))}</td><td>{esc(state)}</td>"
                    f"<td><code>{esc(e.task_id)}</code></td><td>{thumbs}</td></tr>")
        paths = ", ".join(shown_path(history.resolve(im["path"]), base) for im in e.images)
        lines.append(f"{when(e.submitted_at)}  {e.task_id}  {state}  {params_text(req)}  "
                     f"{shorten(prompt, 60)!r}" + (f"  {paths}" if paths else ""))
    where = shown_path(history.path, base)
    head = title or f"{len(entries)} task(s) in {where}"
    if not entries:
        return message_bundle(f"No tasks found in {where}.")
    table = ("<table class='imagen4-history'><thead><tr><th>time</th><th>prompt</th><th>parameters</th>"
             "<th>state</th><th>task id</th><th>images</th></tr></thead><tbody>" + "".join(rows)
             + "</tbody></table>")
    return {"text/plain": head + "\n" + "\n".join(lines),
            "text/html": f"<div class='imagen4-history-wrap'><div>{esc(head)}</div>{table}</div>"}


def record_bundle(record: "TaskRecord") -> dict[str, str]:
    """What the service says about a task right now."""
    items = [("task id", record.task_id), ("state", record.state), ("model", record.model or "")]
    for label, ms in (("created", record.create_time_ms), ("updated", record.update_time_ms),
                      ("completed", record.complete_time_ms)):
        if ms:
            items.append((label, when(ms / 1000)))
    if record.cost_time_ms is not None:
        items.append(("cost time", f"{record.cost_time_ms / 1000:.1f} s"))
    if record.result_urls:
        items.append(("images", str(len(record.result_urls))))
    if record.fail_code or record.fail_msg:
        items.append(("failure", f"{record.fail_msg or ''} (failCode {record.fail_code or '-'})"))
    if record.param and isinstance(record.param.get("input"), dict):
        items.append(("prompt", shorten(record.param["input"].get("prompt"), 200)))
    text = "\n".join(f"{k}: {v}" for k, v in items)
    rows = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>{esc(v)}</td></tr>"
                   for k, v in items)
    return {"text/plain": text, "text/html": f"<table class='imagen4-status'>{rows}</table>"}


# -- rich reprs of Job and Result (used by task.py) --------------------------------------------------
def job_html(job: "Job") -> str:
    html_card = card_bundle(job)["text/html"]
    if job.images:
        html_card += result_html(job.wait(0)) if job.done() and job.error is None else ""
    return html_card


def result_html(result: "Result", max_side: int = 256) -> str:
    imgs = "".join(thumb_html(im.path, max_side) for im in result.images)
    return f"<div class='imagen4-result'><code>{esc(result.task_id)}</code><br/>{imgs}</div>"
