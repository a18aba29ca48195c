"""What the demo says about an executed notebook: cells run, errors, image outputs and their imagen4 task ids,
and the task ids its history names."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE_MIMES = ("image/png", "image/jpeg")


def imagen4_meta(output: dict) -> dict | None:
    md = output.get("metadata") or {}
    if isinstance(md.get("imagen4"), dict):
        return md["imagen4"]
    for mime in IMAGE_MIMES:  # tolerate metadata nested under the mime type
        sub = md.get(mime)
        if isinstance(sub, dict) and isinstance(sub.get("imagen4"), dict):
            return sub["imagen4"]
    return None


def summarize(nb: Any) -> dict[str, Any]:
    """Counts from an executed notebook: code cells run, errors, image outputs, imagen4 task ids."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    ran = [c for c in code if c.get("execution_count") is not None]
    errors = sum(1 for c in code for o in c.get("outputs", []) if o.get("output_type") == "error")
    images = tagged = 0
    task_ids: list[str] = []
    for c in code:
        for o in c.get("outputs", []):
            if not any(m in (o.get("data") or {}) for m in IMAGE_MIMES):
                continue
            images += 1
            meta = imagen4_meta(o)
            if meta is not None:
                tagged += 1
                tid = meta.get("task_id") or meta.get("taskId")
                if isinstance(tid, str) and tid not in task_ids:
                    task_ids.append(tid)
    return {"code_cells": len(code), "ran": len(ran), "errors": errors, "images": images,
            "tagged_images": tagged, "task_ids": task_ids}


def history_task_ids(folder: Path) -> list[str]:
    """Task ids named in the .imagen4/ history files (whatever the event layout, ids are `task_id`)."""
    ids: list[str] = []
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            tid = ev.get("task_id") or ev.get("taskId") if isinstance(ev, dict) else None
            if isinstance(tid, str) and tid not in ids:
                ids.append(tid)
    return ids
