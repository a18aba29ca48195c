"""Export the per-notebook history as a table: one row per task, to CSV or JSON.

Rows carry what a methods section needs: when, task id, model, prompt and parameters (seed included), outcome,
cost time, credits (measured or estimated), whether a simulator made it (`simulated`: its credits were never
billed) and the image files with their sha256. Only these fields are
written; the history never holds the API key, and nothing else is copied from it. `%imagen4 history --export
FILE` calls `export_history`.
`copy_images_to=DIR` also copies every stored image there with its provenance written inside the file
(`api/provenance.py`: task id, model, request, the original's sha256), so the folder stands on its own.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from ..api import provenance
from ..api.models import DEFAULT_MODEL, model_spec
from ..api.store import write_atomic
from .entries import recorded_cost
from .history import History
from .simulated import simulated_ids

COLUMNS = ("time", "task_id", "model", "prompt", "negative_prompt", "aspect_ratio", "num_images", "seed", "state",
           "error", "cost_time_ms", "finished", "source", "simulated", "cell", "batch", "credits", "credits_measured",
           "credits_before", "credits_after", "image_paths", "sha256s")
REQUEST_COLUMNS = ("prompt", "negative_prompt", "aspect_ratio", "num_images", "seed")
LIST_SEPARATOR = ";"  # lists (image paths, sha256s) inside one CSV cell


def _iso(ts: Any) -> str | None:
    if not isinstance(ts, (int, float)):
        return None
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def as_history(history: Any) -> History:
    """The History a caller named: a History, a Session (its history) or the path of a `.jsonl` file."""
    if isinstance(history, History):
        return history
    if hasattr(history, "history") and isinstance(history.history, History):  # a Session
        return history.history
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if not path.is_file():
            raise FileNotFoundError(f"No history file at {path} (it is the .jsonl file in the .imagen4/ folder).")
        return History(path)
    raise TypeError(f"Give a History, a Session or a history path, not {type(history).__name__}.")


def _event_cost(ev: dict) -> dict[str, Any]:
    """An unknown outcome's estimated cost (it may have been billed, so it counts as spent)."""
    cost = recorded_cost(ev.get("cost"))
    return {} if cost is None else {"credits": cost[0], "credits_measured": cost[1]}


def _row(request: dict, tag: Any, cell: Any, **fields: Any) -> dict[str, Any]:
    """One export row in COLUMNS order: the request's fields, the batch tag as `id#index`, then `fields`."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update({k: request.get(k) for k in REQUEST_COLUMNS})
    row["model"] = request.get("model") or DEFAULT_MODEL  # records made before models were google/imagen4 ones
    row.update(cell=cell if isinstance(cell, (int, str)) else None,
               batch=f"{tag.get('id')}#{tag.get('index')}" if isinstance(tag, dict) else None,
               image_paths=[], sha256s=[])
    row.update(fields)
    return row


def history_rows(history: Any, *, base: str | os.PathLike | None = None,
                 copies: dict[tuple[str, str], Path] | None = None) -> list[dict[str, Any]]:
    """One dict per task (plus one per createTask whose outcome is unknown), oldest first.

    Image paths are relative to `base` (a folder) when given, else absolute. `copies` ((task id, stored path)
    -> file, from `copy_images`): those images are named by their copies instead.
    """
    hist = as_history(history)
    entries = hist.entries()
    tags: dict[str | None, Any] = {}  # task id (None in a broken event) -> its batch tag
    unknown: list[dict] = []
    simulated = simulated_ids(hist) if hist.path.exists() else set()
    try:
        for ev in hist.iter_events():
            if ev.get("event") == "submitted" and isinstance(ev.get("batch"), dict):
                tags[ev.get("task_id")] = ev["batch"]
            elif ev.get("event") == "outcome_unknown":
                unknown.append(ev)
    except FileNotFoundError:
        pass

    def path_of(stored: str, task_id: str = "") -> str:
        full = (copies or {}).get((task_id, stored)) or hist.resolve(stored).resolve()
        if base is None:
            return str(full)
        return os.path.relpath(full, Path(base).resolve())

    rows: list[tuple[float, dict[str, Any]]] = []
    for entry in entries:
        rows.append((entry.submitted_at or 0.0, _row(
            entry.request or {}, tags.get(entry.task_id), entry.cell,
            time=_iso(entry.submitted_at), task_id=entry.task_id, state=entry.state,
            error=(entry.error or {}).get("message"), cost_time_ms=entry.cost_time_ms,
            finished=_iso(entry.finished_at), source=entry.source, simulated=entry.task_id in simulated,
            credits=entry.credits, credits_measured=entry.credits_measured if entry.credits is not None else None,
            credits_before=entry.credits_before, credits_after=entry.credits_after,
            image_paths=[path_of(im["path"], entry.task_id) for im in entry.images if im.get("path")],
            sha256s=[im.get("sha256") for im in entry.images])))
    for ev in unknown:
        req = ev.get("request")
        req = req if isinstance(req, dict) else {}
        rows.append((ev.get("time") or 0.0, _row(
            req, ev.get("batch"), ev.get("cell"), time=_iso(ev.get("time")), state="outcome-unknown",
            error=ev.get("message"), source=ev.get("source"), simulated=ev.get("simulated") is True,
            **_event_cost(ev))))
    rows.sort(key=lambda pair: pair[0])
    return [row for _, row in rows]


def copy_images(history: Any, folder: str | os.PathLike) -> dict[tuple[str, str], Path]:
    """Copy every stored image of the history's succeeded tasks into `folder` as `<task id>-<index>.<ext>`, with
    its provenance inside the file (`read_provenance(path)`: task id, model, request, the original's sha256,
    index, simulated); the originals in `.imagen4/images/` are left as they are. Returns (task id, stored
    path) -> copy. Images whose file is missing are skipped."""
    hist = as_history(history)
    out = Path(folder).expanduser()
    simulated = simulated_ids(hist)
    copies: dict[tuple[str, str], Path] = {}
    for entry in hist.entries():
        if not entry.succeeded:
            continue
        request = entry.request or {}
        for stored, image in zip([d for d in entry.images if hist.content_addressed(d)],
                                 hist.stored_images(entry), strict=True):
            try:
                data = Path(image.path).read_bytes()
            except OSError:
                continue
            name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', entry.task_id)}-{image.index}{Path(image.path).suffix}"
            info = {"task_id": entry.task_id, "model": request.get("model") or model_spec(None).name,
                    "request": request, "sha256": image.sha256, "index": image.index,
                    **({"simulated": True} if entry.task_id in simulated else {})}
            copies[(entry.task_id, stored["path"])] = provenance.write(out / name, data, image.mime, info).resolve()
    return copies


def export_history(history: Any, path: str | os.PathLike, *, format: str | None = None,
                   absolute_paths: bool = False, copy_images_to: str | os.PathLike | None = None) -> Path:
    """Write the history's tasks to `path` (.csv or .json, or `format=`); returns the path written.

    Columns: time, task_id, model, prompt, negative_prompt, aspect_ratio, num_images, seed, state, error,
    cost_time_ms, finished, source, cell, batch, credits, credits_measured, credits_before, credits_after,
    image_paths, sha256s. `credits` is what the task cost (reused from another notebook: empty), measured
    (`credits_measured` true: a balance delta) or an estimate (a price list).
    Image paths are relative to the exported file's folder unless `absolute_paths=True`; in CSV, lists are
    joined with ';'. The file is replaced atomically.
    `copy_images_to=DIR`: every stored image is also copied into DIR with its provenance written inside
    (see `copy_images`), and `image_paths` name the copies; `sha256s` stay the originals' (the copies' bytes
    differ by the provenance; each copy names its original's sha256).
    """
    target = Path(path).expanduser()
    kind = (format or target.suffix.lstrip(".")).lower()
    if kind not in ("csv", "json"):
        raise ValueError(f"Export to a .csv or .json file, not {target.name!r} (or pass format='csv'/'json').")
    copies = copy_images(history, copy_images_to) if copy_images_to is not None else None
    rows = history_rows(history, base=None if absolute_paths else (target.parent.resolve()), copies=copies)
    if kind == "json":
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (LIST_SEPARATOR.join(str(x) for x in v) if isinstance(v, list) else
                                 ("" if v is None else v)) for k, v in row.items()})
        text = buf.getvalue()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode("utf-8"))
    return target


def history_frame(notebook: Any = None, *, absolute_paths: bool = True) -> Any:
    """The history as a pandas DataFrame, one row per task (and per createTask whose outcome is unknown), in the
    columns and order of `export_history`'s CSV: `time` and `finished` as timezone-aware datetimes, `image_paths`
    and `sha256s` as lists. Needs pandas.

    notebook: None for this kernel's notebook, a notebook's name or path (its history beside it in `.imagen4/`),
    or a `History`, a `Session` or a history .jsonl path.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("history_frame() needs pandas (pip install pandas); export_history(history, "
                          "'history.csv') writes the same table without it.") from None
    rows = history_rows(_frame_source(notebook), base=None if absolute_paths else Path.cwd())
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    for column in ("time", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def _frame_source(notebook: Any) -> Any:
    if notebook is None:
        from .session import get_session

        return get_session().history
    if isinstance(notebook, (str, os.PathLike)) and Path(notebook).suffix == ".jsonl":
        return notebook
    if isinstance(notebook, (str, os.PathLike)):
        from .location import history_path

        path = history_path(Path(notebook).expanduser().resolve())
        if not path.is_file():
            raise FileNotFoundError(f"No history for {notebook} (looked for {path}).")
        return path
    return notebook
