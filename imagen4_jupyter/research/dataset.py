"""Generated images as a dataset others can load: the Hugging Face `imagefolder` layout (image files, a
`metadata.jsonl` with a `file_name` column, a `README.md` dataset card), or one Parquet file with the image bytes.

Each image is the stored original with its provenance spliced in as text chunks (`api/provenance.py`: the
pixels are never re-encoded); `sha256` is the hash of the file as written, `source_sha256` the original's (its
name in the image store). The export itself needs no third-party library (Parquet needs pyarrow).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import errors as E
from ..api import provenance
from ..api.models import model_spec, short_name
from ..api.store import StoredImage, write_atomic
from ..records.export import as_history
from ..records.history import History
from ..records.simulated import simulated_ids

FORMATS = ("imagefolder", "parquet")
COLUMNS = ("file_name", "prompt", "negative_prompt", "aspect_ratio", "num_images", "seed", "model", "task_id",
           "image_index", "width", "height", "sha256", "source_sha256", "credits", "credits_measured", "created_at",
           "simulated")


@dataclass
class _Task:
    """One succeeded task as the export sees it, whatever the source."""

    task_id: str
    request: dict
    images: list[StoredImage]
    created_at: float | None
    credits: float | None
    credits_measured: bool
    simulated: bool
    state: str = "success"
    extra: dict[str, Any] = field(default_factory=dict)  # the grid cell's axis values

    @property
    def model(self) -> str:
        return model_spec(self.request.get("model")).name


# -- sources ------------------------------------------------------------------------------------------
def _history_of(source: Any, session: Any) -> History:
    if source is not None:
        return as_history(source)
    assert session is not None  # export_dataset makes the default session when given no source
    return session.history


def _from_history(hist: History) -> list[_Task]:
    simulated = simulated_ids(hist) if hist.path.exists() else set()
    tasks = []
    for entry in hist.entries():
        tasks.append(_Task(entry.task_id, dict(entry.request or {}), hist.stored_images(entry) if entry.succeeded
                           else [], entry.submitted_at, entry.credits,
                           entry.credits_measured, entry.task_id in simulated,
                           state="success" if entry.succeeded else (entry.state or "unknown")))
    return tasks


def _grids(source: Any) -> list[Any]:
    """The sheets of a Grid or a GridSet (a list of Grids); [] for anything else."""
    if isinstance(source, list) and source and all(hasattr(g, "cells") for g in source):
        return list(source)
    return [source] if hasattr(source, "cells") and hasattr(source, "layout") else []


def _items_of(source: Any) -> tuple[list[Any], list[dict[str, Any]], bool | None]:
    """The batch items of a BatchResult, Grid or GridSet, with each one's axis values (grids), and whether the
    grid says a simulator made them (None: it does not say)."""
    grids = _grids(source)
    if grids:
        items, extras, simulated = [], [], False
        for k, g in enumerate(grids):
            axes = getattr(g, "axes", None) or {}
            for r, row in enumerate(g.cells):
                for c, item in enumerate(row):
                    extra: dict[str, Any] = {}
                    for axis, pos in (("x", c), ("y", r), ("z", k)):
                        spec = axes.get(axis)
                        if spec and pos < len(spec["values"]):
                            extra[spec["field"]] = spec["values"][pos]
                    items.append(item)
                    extras.append(extra)
            simulated = simulated or bool(getattr(g, "simulated", False))
        return items, extras, simulated
    if hasattr(source, "items") and hasattr(source, "batch_id"):  # a BatchResult
        items = list(source.items)
        client = getattr(source.control, "client", None)
        return items, [{} for _ in items], (client.simulated is True) if client is not None else None
    raise TypeError(f"export_dataset takes a BatchResult, a Grid, a history (History, Session or .jsonl path) or "
                    f"None for the notebook's history, not {type(source).__name__}.")


def _from_items(source: Any, session: Any) -> list[_Task]:
    items, extras, grid_simulated = _items_of(source)
    hist = session.history if session is not None else None
    simulated = simulated_ids(hist) if hist is not None and hist.path.exists() else set()
    tasks, seen = [], set()
    for item, extra in zip(items, extras, strict=True):
        tid = getattr(item, "task_id", None)
        if item is None or not tid or tid in seen:
            continue
        seen.add(tid)
        entry = hist.get(tid) if hist is not None else None
        job = item.job
        request = dict(entry.request) if entry is not None and entry.request else item.request.to_dict()
        cost = (entry.credits, entry.credits_measured) if entry is not None and entry.credits is not None else (
            job.cost if job is not None and job.cost is not None else (None, False))
        made = entry.submitted_at if entry is not None and entry.submitted_at else (
            job.created_at if job is not None else None)
        sim = tid in simulated or (grid_simulated is True and entry is None)  # a client's tasks: its word
        tasks.append(_Task(tid, request, list(item.images), made, cost[0], bool(cost[1]), sim,
                           state=item.state, extra=extra))
    return tasks


def _when(value: Any, what: str) -> float | None:
    """A date bound as a Unix time: a datetime, a date (its midnight, local time), an ISO string or a number."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            raise E.InvalidRequestError(f"{what}= must be a date such as '2026-01-31', not {value!r}.") from None
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.astimezone()).timestamp()
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day).astimezone().timestamp()
    raise E.InvalidRequestError(f"{what}= must be a date, a datetime or an ISO string, not {type(value).__name__}.")


def _models(value: Any) -> set[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value)
    return {model_spec(n).name for n in names}


def select(tasks: Iterable[_Task], *, model: Any = None, state: Any = "success", since: Any = None,
           until: Any = None) -> list[_Task]:
    """The tasks of one model (or a list of models), state and date range (`since` inclusive, `until` exclusive;
    a date alone for `until` means up to that day's midnight)."""
    models = _models(model)
    states = None if state is None else ({state} if isinstance(state, str) else set(state))
    lo, hi = _when(since, "since"), _when(until, "until")
    out = []
    for t in tasks:
        if models is not None and t.model not in models:
            continue
        if states is not None and t.state not in states:
            continue
        if lo is not None and (t.created_at is None or t.created_at < lo):
            continue
        if hi is not None and (t.created_at is None or t.created_at >= hi):
            continue
        out.append(t)
    return out


# -- rows and files ---------------------------------------------------------------------------------
def _iso(ts: float | None) -> str | None:
    return None if ts is None else _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _files(tasks: list[_Task]) -> tuple[list[tuple[dict[str, Any], bytes]], int]:
    """One (row, file bytes) per image: the stored original with its provenance spliced in; and how many images
    were left out because their stored file is missing or no longer matches its sha256."""
    out, skipped = [], 0
    for t in tasks:
        for im in t.images:
            try:
                original = Path(im.path).read_bytes()
            except OSError:
                skipped += 1
                continue
            source_sha = hashlib.sha256(original).hexdigest()
            if source_sha != im.sha256:  # the store names a file by its hash: a changed file is not the image
                skipped += 1
                continue
            info = {"task_id": t.task_id, "model": t.model, "request": t.request, "sha256": source_sha,
                    "index": im.index, **({"simulated": True} if t.simulated else {})}
            data = provenance.embed(original, im.mime, info)
            ext = Path(im.path).suffix or {"image/png": ".png", "image/jpeg": ".jpg"}.get(im.mime, "")
            row: dict[str, Any] = dict.fromkeys(COLUMNS)
            row.update({k: t.request.get(k) for k in ("prompt", "negative_prompt", "aspect_ratio", "num_images",
                                                      "seed")})
            row.update(file_name=f"images/{_safe(t.task_id)}-{im.index}{ext}", model=t.model, task_id=t.task_id,
                       image_index=im.index, width=im.width, height=im.height,
                       sha256=hashlib.sha256(data).hexdigest(), source_sha256=source_sha, credits=t.credits,
                       credits_measured=t.credits_measured if t.credits is not None else None,
                       created_at=_iso(t.created_at), simulated=t.simulated)
            for k, v in t.extra.items():  # a grid's placeholder values (fields are columns already)
                if k not in row:
                    row[k] = v
            out.append((row, data))
    return out, skipped


def dataset_card(rows: list[dict[str, Any]], *, templates: list[str], left_out: int = 0, skipped: int = 0,
                 parquet_name: str | None = None) -> str:
    """The README.md of a dataset: what made it, images per model, the prompts' templates, the dates, the tool's
    version and how to load it; its first line says so when simulated images are in it."""
    from .. import __version__

    n_sim = sum(1 for r in rows if r["simulated"])
    per_model = Counter(short_name(r["model"]) for r in rows)
    dates = sorted(r["created_at"] for r in rows if r["created_at"])
    if n_sim:
        first = (f"# SIMULATED: {n_sim} of these {len(rows)} images were made by the imagen4-jupyter simulator, "
                 "not by Imagen 4")
    else:
        first = f"# Imagen 4 images: {len(rows)} generated images"
    lines = [first, "",
             f"Generated with Google's Imagen 4 models through Apikley's task API, using imagen4-jupyter "
             f"{__version__}, and exported with `export_dataset` "
             f"on {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}.", "",
             "## Images per model", "", "| model | images |", "|---|---|",
             *[f"| {m} | {n} |" for m, n in per_model.items()], ""]
    if n_sim:
        lines += [f"{n_sim} image(s) are simulated (`simulated` column true): synthetic pictures, never billed, "
                  "not model output.", ""]
    lines += ["## Prompts", "", *[f"- `{t}`" for t in templates[:20]]]
    if len(templates) > 20:
        lines.append(f"- ... and {len(templates) - 20} more (see the `prompt` column)")
    lines += ["", "## Dates", "", f"From {dates[0]} to {dates[-1]}." if dates else "Unknown.", ""]
    if left_out:
        lines += [f"{left_out} simulated image(s) were left out (`include_simulated=False`).", ""]
    if skipped:
        lines += [f"{skipped} image(s) were left out because their stored file was missing or changed.", ""]
    lines += ["## Columns", "",
              "`file_name`, the request fields (`prompt`, `negative_prompt`, `aspect_ratio`, `num_images`, `seed`), "
              "`model`, `task_id`, `image_index`, `width`, `height`, `sha256` (of the file as written), "
              "`source_sha256` (the stored original: the files differ only by the provenance text chunks, the "
              "pixels are not re-encoded), `credits`, `credits_measured` (false: an estimate), `created_at`, "
              "`simulated`. Each image file also carries its provenance inside (PNG iTXt `imagen4`, JPEG comment "
              "and XMP).", "", "## Loading", ""]
    if parquet_name:
        lines += ["```python", "import pandas as pd", f"df = pd.read_parquet({parquet_name!r})",
                  "# df['image'] holds {'bytes': ..., 'path': ...}", "```"]
    else:
        lines += ["```python", "from datasets import load_dataset",
                  "ds = load_dataset('imagefolder', data_dir='.', split='train')", "```", "",
                  "or without `datasets`: read `metadata.jsonl` (one JSON object per line) and open `file_name`."]
    return "\n".join(lines) + "\n"


def _templates(source: Any, rows: list[dict[str, Any]]) -> list[str]:
    grids = _grids(source)
    found = [g.template for g in grids if getattr(g, "template", None)]
    if found:
        return list(dict.fromkeys(found))
    return list(dict.fromkeys(r["prompt"] for r in rows if r["prompt"]))


def export_dataset(source: Any, path: str | os.PathLike, *, format: str = "imagefolder",
                   include_simulated: bool = False, model: Any = None, state: Any = "success", since: Any = None,
                   until: Any = None, session: Any = None, overwrite: bool = False) -> Path:
    """Write generated images as a dataset; returns the folder (imagefolder) or the file (parquet).

    source: a `BatchResult`, a `Grid` (or a z-axis `GridSet`), a history (`History`, `Session`, or the .jsonl
    path), or None for the notebook's history. Filters: `model` (a name or a list), `state` (default
    "success": only succeeded tasks have images), `since` / `until` (dates, datetimes or ISO strings).

    format="imagefolder": `path/images/<task id>-<index>.<ext>` (the stored original with its provenance spliced
    in; the pixels are never re-encoded), `path/metadata.jsonl` (one row per image: `file_name`, the request
    fields, model, task_id, seed, `sha256` of the file as written, `source_sha256` of the stored original,
    credits, created_at, simulated; a grid adds its placeholders' values) and a `README.md` dataset card. Load it
    with `datasets.load_dataset("imagefolder", data_dir=path)`.
    format="parquet": the same rows with the image bytes (`image`: {bytes, path}) in one Parquet file at `path`
    (needs pyarrow); the card is kept in the file's metadata (`dataset_card`).

    Simulated images are left out unless `include_simulated=True`; the card's first line then says so.
    An existing non-empty folder or file is refused unless `overwrite=True`.
    """
    if format not in FORMATS:
        raise E.InvalidRequestError(f"format must be one of {', '.join(FORMATS)}, not {format!r}.")
    if source is None or isinstance(source, (History, str, os.PathLike)) or isinstance(
            getattr(source, "history", None), History):
        if source is None and session is None:
            from .batch import default_session

            session = default_session()
        tasks = _from_history(_history_of(source, session))
    else:
        if session is None:
            from .batch import default_session

            session = default_session()
        tasks = _from_items(source, session)
    tasks = select(tasks, model=model, state=state, since=since, until=until)
    left_out = 0
    if not include_simulated:
        left_out = sum(len(t.images) for t in tasks if t.simulated)
        tasks = [t for t in tasks if not t.simulated]
    files, skipped = _files(tasks)
    if not files:
        why = (f"all {left_out} images were made by a simulator; pass include_simulated=True to export them"
               if left_out else "no stored images match (succeeded tasks, and the model/state/date filters)")
        raise E.InvalidRequestError(f"Nothing to export: {why}.")
    target = Path(path).expanduser()
    rows = [row for row, _ in files]
    extra = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in COLUMNS]
    for row in rows:  # every row has every column (a grid's placeholders), as a table needs
        for k in extra:
            row.setdefault(k, None)
    templates = _templates(source, rows)
    if format == "parquet":
        return _write_parquet(target, files, templates, left_out, skipped, overwrite)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise E.InvalidRequestError(f"{target} exists and is not empty; choose a new folder or pass overwrite=True.")
    if overwrite and (target / "images").is_dir():
        shutil.rmtree(target / "images")
    (target / "images").mkdir(parents=True, exist_ok=True)
    for row, data in files:
        write_atomic(target / row["file_name"], data)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomic(target / "metadata.jsonl", text.encode("utf-8"))
    card = dataset_card(rows, templates=templates, left_out=left_out, skipped=skipped)
    write_atomic(target / "README.md", card.encode("utf-8"))
    return target


def _write_parquet(target: Path, files: list[tuple[dict[str, Any], bytes]], templates: list[str], left_out: int,
                   skipped: int, overwrite: bool) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("format='parquet' needs pyarrow (pip install pyarrow); format='imagefolder' needs "
                          "nothing more.") from None
    if target.suffix.lower() != ".parquet":
        raise E.InvalidRequestError(f"Write Parquet to a .parquet file, not {target.name!r}.")
    if target.exists() and not overwrite:
        raise E.InvalidRequestError(f"{target} exists; choose a new name or pass overwrite=True.")
    rows = [row for row, _ in files]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = {k: [row.get(k) for row in rows] for k in columns}
    for k in ("seed", "negative_prompt"):  # text or empty in every row (pyarrow would guess null for all-empty)
        table[k] = [None if v is None else str(v) for v in table[k]]
    table["image"] = [{"bytes": data, "path": row["file_name"]} for row, data in files]
    schema_fields = []
    for k in columns:
        if k in ("seed", "negative_prompt"):
            schema_fields.append(pa.field(k, pa.string()))
        else:
            schema_fields.append(pa.field(k, pa.array(table[k]).type))
    schema_fields.append(pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    card = dataset_card(rows, templates=templates, left_out=left_out, skipped=skipped, parquet_name=target.name)
    schema = pa.schema(schema_fields, metadata={"dataset_card": card})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(pa.Table.from_pydict(table, schema=schema), tmp)
    os.replace(tmp, target)
    return target
