"""Notebook outputs: image bundles with their `imagen4` metadata, the history table, the status table.

Pure functions that build MIME bundles (dicts); publishing them is the caller's business.
"""
from __future__ import annotations

import base64
import hashlib
import io
from typing import TYPE_CHECKING, Any

from ..api.cards import (
    CLIP,
    FG,
    TASK_ID_WIDTH,
    THUMBS_WIDTH,
    clip_line,
    esc,
    fit_table,
    message_bundle,
    params_text,
    plural,
    shorten,
    shown_path,
    task_id_html,
    thumbs_html,
    when,
    when_html,
)
from ..api.request import MODEL
from ..api.spend import cost_text
from ..api.store import preview
from ..records.entries import entry_cost
from ..records.simulated import simulated_ids
from .options import EMBED_MODES  # noqa: F401 - defined with the flags (the magic's traits need it at load)

if TYPE_CHECKING:
    from ..api.job import Job
    from ..api.store import StoredImage
    from ..api.task import TaskRecord
    from ..records.history import History, TaskEntry

NATIVE = ("image/png", "image/jpeg")
# the box an image is shown in inside a cell (width, height in CSS pixels): a 16:9 image 480 px wide, a square
# one 360 px, so a task's images sit side by side (see `cards.CELL_CSS`) and one image never fills the screen
SHOWN_BOX = (480, 360)


def display_width(width: int | None, height: int | None, embedded_width: int | None = None) -> int | None:
    """The width an image is shown at in a cell: fitted into `SHOWN_BOX`, never wider than its embedded pixels."""
    if not width or not height:
        return None
    box_w, box_h = SHOWN_BOX
    shown = min(box_w, box_h * width / height, embedded_width or width, width)
    return max(1, round(shown))


def image_metadata(job: "Job", image: "StoredImage", embed: str, *, embedded_mime: str | None = None,
                   embedded_sha256: str | None = None, base: Any = None, simulated: bool = False) -> dict:
    """Provenance stored with each image output under the key `imagen4`; `path` as `shown_path` gives it
    (relative to the notebook's folder `base` when inside it). `simulated`: made by the in-kernel simulator
    (`"simulated": true`; the key is absent for the real service)."""
    rec = job.record
    meta = {
        "task_id": job.task_id,
        "request": job.request.to_dict() if job.request else None,
        "model": (rec.model if rec and rec.model else job.request.model if job.request else MODEL),
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
    if simulated:
        meta["simulated"] = True
    return meta


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
                 preview_size: int = 768, *, base: Any = None, simulated: bool = False) -> tuple[dict[str, str], dict]:
    """(data, metadata) for one image: native `image/png` / `image/jpeg`, or paths only for `none`. File paths
    are relative to `base` (the notebook's folder) when inside it (`shown_path`); `simulated` as in
    `image_metadata`."""
    path = shown_path(image.path, base)
    if embed == "none":
        meta = image_metadata(job, image, embed, base=base, simulated=simulated)
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
                          base=base, simulated=simulated)
    embedded_width = None if embed == "full" else round(preview_size * image.width / max(image.width, image.height, 1))
    metadata: dict[str, Any] = {"imagen4": meta}
    shown = display_width(image.width, image.height, embedded_width)
    if shown:  # the width JupyterLab, Notebook 7 and VS Code show the image at (as IPython's Image(width=) does)
        metadata[mime] = {"width": shown}
    return ({mime: base64.b64encode(data).decode("ascii"), "text/plain": f"<image {path}>"}, metadata)


# The history table's columns (header, width): the task (its date, prompt, parameters and any error, a line
# each) takes what the others leave and gives way first; state, credits, task id and thumbnails keep their widths,
# so they stay in view in an output about 370 px wide (an 800 px window with the file browser open).
COLUMNS = [("task", ""), ("state", "68px"), ("credits", "54px"), ("task id", TASK_ID_WIDTH), ("images", THUMBS_WIDTH)]


def history_bundle(entries: list["TaskEntry"], history: "History", *, thumbnails: bool = True,
                   title: str = "", base: Any = None) -> dict[str, str]:
    """A table of history entries: time, prompt (its parameters and any error below it), state (`simulated`
    when a simulator made the task: its credits were never billed), credits (`~6`: an estimate), task id,
    thumbnails; the text form names the image files (relative to `base`, the notebook's folder, when inside
    it). Long text ends in an ellipsis (whole on hover); the task id gives way in its middle."""
    rows, lines = [], []
    simulated = simulated_ids(history) if entries and history.path.exists() else set()
    for e in entries:
        req = e.request or {}
        prompt = req.get("prompt") or ""
        state, message = e.state, ""
        if e.error is not None:
            message = str(e.error.get("message") or "")
            if "The service said:" in message:  # the service's own words say more than our hint
                message = message.split("The service said:", 1)[1]
            message = " ".join(message.split())
        thumbs = ""
        if thumbnails and e.state == "success":
            stored = list(history.stored_images(e))  # content-addressed only
            thumbs = thumbs_html([im.path for im in stored], [f"image {im.index + 1} of {e.task_id}" for im in stored])
        cost = entry_cost(e)
        credits = cost_text(cost, unit=False) if cost else "reused" if e.origin else ""
        sim = e.task_id in simulated
        mark = "<br/><span class='imagen4-simulated' style='font-style:italic'>simulated</span>" if sim else ""
        tip = "measured" if cost and cost[1] else "an estimate (the price list)" if cost else ""
        what = (f"<div style='{CLIP};font-size:11px'>{when_html(e.submitted_at)}</div>" + clip_line(prompt, 200)
                + clip_line(params_text(req), style="font-size:11px")
                + (clip_line(f"{e.state}: {message}", style=f"color:{FG}") if message else ""))
        rows.append([what, f"<span style='overflow-wrap:anywhere'>{esc(state)}</span>{mark}",
                     f"<span title='{tip}' style='white-space:nowrap'>{esc(credits)}</span>",
                     task_id_html(e.task_id), thumbs])
        shown_state = f"{e.state}: {shorten(message, 80)}" if message else state
        paths = ", ".join(shown_path(history.resolve(im["path"]), base) for im in e.images)
        lines.append(f"{when(e.submitted_at)}  {e.task_id}  {shown_state}{' (simulated)' if sim else ''}  "
                     f"{params_text(req)}{'  ' + cost_text(cost) if cost else ''}  "
                     f"{shorten(prompt, 60)!r}" + (f"  {paths}" if paths else ""))
    where = shown_path(history.path, base)
    head = title or f"{plural(len(entries), 'task')} in {where}"
    if not entries:
        return message_bundle(f"No tasks found in {where}.")
    table = fit_table(COLUMNS, rows, "imagen4-history")
    return {"text/plain": head + "\n" + "\n".join(lines),
            "text/html": f"<div class='imagen4-history-wrap' style='color:{FG};max-width:100%'>"
                         f"<div style='{CLIP}' title='{esc(head)}'>{esc(head)}</div>{table}</div>"}


def record_bundle(record: "TaskRecord", *, simulated: bool = False) -> dict[str, str]:
    """What the service says about a task right now (`simulated`: the service that answered is a simulator)."""
    items = [("task id", record.task_id), ("state", record.state), ("model", record.model or "")]
    if simulated:
        items.append(("service", "a simulator (simulated, nothing is billed)"))
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
