"""Everything a person sees: status cards, image outputs with metadata, history tables.

All user text is HTML-escaped. Rich HTML for notebooks; plain text for terminals.
"""
from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import Job, Result


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def job_html(job: "Job") -> str:
    state = esc(job.status)
    prompt = esc(job.request.prompt[:120]) if job.request else ""
    extra = f"<div class='imagen4-error'>{esc(job.error)}</div>" if job.error is not None else ""
    return (f"<div class='imagen4-job'><code>{esc(job.task_id)}</code> <b>{state}</b> "
            f"{job.elapsed:.1f} s <i>{prompt}</i>{extra}</div>")


def result_html(result: "Result", max_side: int = 256) -> str:
    imgs = "".join(
        f"<img src='data:{im.mime};base64,{base64.b64encode(im.data).decode()}' "
        f"style='max-width:{max_side}px;max-height:{max_side}px;margin:2px' title='{esc(im.path)}'/>"
        for im in result.images)
    return f"<div class='imagen4-result'><code>{esc(result.task_id)}</code><br/>{imgs}</div>"
