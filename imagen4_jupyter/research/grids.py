"""Contact sheets and X/Y grids: many results in one labelled image (prompt x seed, prompt x aspect ratio).

`contact_sheet(...)` lays out any results as a PIL image; `prompt_seed_grid(...)` / `prompt_ratio_grid(...)`
run the batch (`generate_many`, so reuse, resume and the rate-limit backoff apply) and return a `Grid`:
the sheet (`.image`, `.save(path)`, shown inline), its labels and the task id of every cell.
Thumbnails are at most `cell_size` pixels on a side, so a sheet stays small. Labels use Pillow's default
font, wrapped to the cell width.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..api.models import model_spec
from ..api.request import ASPECT_RATIOS
from .sheet import Layout, as_matrix, cell_model, compose

MAX_INLINE_PNG = 1_500_000  # larger sheets are shown inline as JPEG (the saved file keeps PNG)


def contact_sheet(items: Any, *, rows: int | None = None, cols: int | None = None,
                  row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                  title: str | None = None, cell_size: int = 256, as_bytes: bool = False,
                  captions: bool | Sequence[str | None] | None = None, **options: Any) -> Any:
    """Lay results out in one image: a `Grid` (kind "contact sheet"; `.image` is the PIL image, whose methods
    and attributes the sheet also answers), or PNG bytes with `as_bytes=True`. Shown inline with its provenance
    (every cell's task id, request and model) under the output's top-level `imagen4` metadata.

    items: a flat list (row by row) or a list of rows of Results, Jobs, BatchItems, StoredImages, paths,
    bytes or PIL images (None leaves a cell empty; a failed item shows its state); a BatchResult works too.
    A cell with several images (num_images > 1) tiles them. Thumbnails are at most `cell_size` px a side.
    captions: a line under each cell. None (default): the model's short name (fast, standard, ultra) when
    the sheet mixes models; True: the model always; False: none; or one text per cell, row by row.
    """
    rows_ = list(row_labels) if row_labels is not None else []
    cols_ = list(col_labels) if col_labels is not None else []
    matrix = as_matrix(items, rows, cols, len(rows_), len(cols_))
    image, layout = compose(matrix, row_labels=row_labels, col_labels=col_labels, title=title, cell_size=cell_size,
                            captions=captions, **options)
    sheet = Grid(image, layout, row_labels=[str(x) for x in rows_], col_labels=[str(x) for x in cols_],
                 cells=matrix, title=title, kind="contact sheet",
                 simulated=any_simulated([it for row in matrix for it in row]))
    return sheet.to_png() if as_bytes else sheet


# -- grids ------------------------------------------------------------------------------------------
class Grid:
    """A labelled X/Y grid or contact sheet of generated images: `.image` (PIL), `.save(path)`, `.task_ids` per
    cell.

    Shown inline as one PNG (JPEG when large) with its provenance in the output's top-level `imagen4` metadata,
    where a cell image keeps its own (`notebook/outputs.py`): per cell the task id, request, model and state;
    `"simulated": true` when a simulator made its images (in the metadata and the saved file's provenance).
    """

    def __init__(self, image: Any, layout: Layout, *, row_labels: list[str], col_labels: list[str],
                 cells: list[list[Any]], batch: Any = None, title: str | None = None, kind: str = "grid",
                 simulated: bool = False, facts: list[list[dict[str, Any] | None]] | None = None,
                 summary: list[str] | None = None, axes: dict[str, Any] | None = None, template: str | None = None):
        self.image = image
        self.layout = layout
        self.row_labels = row_labels
        self.col_labels = col_labels
        self.cells = cells
        self.batch = batch
        self.title = title
        self.kind = kind
        self.simulated = simulated
        self.facts = facts  # per cell (grid()): model, credits, measured, seconds, images, reused
        self.summary = list(summary or [])  # one line per model (grid() with model on an axis)
        self.axes = axes  # grid(): which field or placeholder each axis is, with its values
        self.template = template  # grid(): the prompt template
        self._png: bytes | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_labels), len(self.col_labels)

    @property
    def task_ids(self) -> list[list[str | None]]:
        return [[getattr(item, "task_id", None) for item in row] for row in self.cells]

    def cell(self, row: int, col: int) -> Any:
        """The BatchItem behind one cell (its request, job, images, error)."""
        return self.cells[row][col]

    def provenance(self) -> dict[str, Any]:
        """What the sheet shows: kind, labels, and per cell the task id, state and request."""
        return {"kind": self.kind, "title": self.title, "rows": self.row_labels, "cols": self.col_labels,
                "cells": [[{"task_id": getattr(it, "task_id", None), "state": getattr(it, "state", None),
                            "request": it.request.to_dict() if getattr(it, "request", None) else None,
                            "sha256": [im.sha256 for im in getattr(it, "images", [])]}
                           for it in row] for row in self.cells], **self._experiment(),
                **({"simulated": True} if self.simulated else {})}

    def _experiment(self) -> dict[str, Any]:
        """What `grid()` adds: per cell the credits and seconds, the axes and the summary per model."""
        if self.facts is None:
            return {}
        return {"credits": [[f and f["credits"] for f in row] for row in self.facts],
                "credits_measured": [[f and f["measured"] for f in row] for row in self.facts],
                "seconds": [[f and f["seconds"] for f in row] for row in self.facts],
                "axes": self.axes, "summary": self.summary}

    def describe(self) -> str:
        """One line in words for image viewers (the PNG's `Description`): what the sheet is and its task ids."""
        ids = [t for row in self.task_ids for t in row if t]
        return (f"Imagen 4 {self.kind} grid{' (simulated)' if self.simulated else ''}, "
                f"{len(self.row_labels)}x{len(self.col_labels)}"
                f"{f': {self.title}' if self.title else ''}; tasks {', '.join(ids) or 'none'}")

    def _pnginfo(self) -> Any:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt("imagen4", json.dumps(self.provenance(), ensure_ascii=False, sort_keys=True))
        info.add_itxt("Description", self.describe())
        return info

    def _jpeg_comment(self) -> bytes:
        """The provenance as the JPEG comment `api.provenance.read_provenance` reads (`imagen4:` + JSON); one
        segment holds 64 kB, so a huge sheet keeps the task ids and states and drops the requests."""
        info = self.provenance()
        text = json.dumps(info, ensure_ascii=False, sort_keys=True).encode()
        if len(text) > 65000:
            info["cells"] = [[{k: c[k] for k in ("task_id", "state")} for c in row] for row in info["cells"]]
            text = json.dumps(info, ensure_ascii=False, sort_keys=True).encode()
        return b"imagen4:" + text

    def to_png(self) -> bytes:
        if self._png is None:
            buf = io.BytesIO()
            self.image.save(buf, format="PNG", optimize=True, pnginfo=self._pnginfo())
            self._png = buf.getvalue()
        return self._png

    def save(self, path: str | os.PathLike, **options: Any) -> Path:
        """Write the sheet; the format follows the extension. PNG and JPEG files carry the provenance (kind,
        labels, and per cell the task id, state, request and sha256s), which `read_provenance(path)` reads back:
        PNG in an `imagen4` iTXt chunk (with a `Description` in words), JPEG in its comment."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".png" and not options:
            path.write_bytes(self.to_png())
        elif suffix == ".png":
            self.image.save(path, **{"pnginfo": self._pnginfo(), **options})
        elif suffix in (".jpg", ".jpeg"):
            self.image.convert("RGB").save(path, **{"comment": self._jpeg_comment(), **options})
        else:
            self.image.save(path, **options)
        return path

    def output_metadata(self, mime: str = "image/png", data: bytes | None = None) -> dict[str, Any]:
        """The output's `imagen4` metadata: what a cell image's says, per cell (row by row, None where a cell has
        no task): `task_ids`, `requests`, `models`, `states`; the sheet's `kind`, `title`, `rows`, `cols`, and the
        embedded picture's `mime`, `width`, `height`, `embedded_sha256`. `grid` keeps the earlier shape (kind,
        rows, cols, task ids) for readers of it."""
        def per_cell(read) -> list[list[Any]]:
            return [[read(it) for it in row] for row in self.cells]

        def request_of(it: Any) -> dict | None:
            req = getattr(it, "request", None)
            return req.to_dict() if req is not None and hasattr(req, "to_dict") else None

        meta: dict[str, Any] = {
            "kind": self.kind, "title": self.title, "rows": self.row_labels, "cols": self.col_labels,
            "task_ids": self.task_ids, "requests": per_cell(request_of), "models": per_cell(cell_model),
            "states": per_cell(lambda it: getattr(it, "state", None)),
            "mime": mime, "width": self.image.width, "height": self.image.height,
            "embedded_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "grid": {"kind": self.kind, "rows": self.row_labels, "cols": self.col_labels,
                     "task_ids": self.task_ids}, **self._experiment(),
            **({"simulated": True} if self.simulated else {})}
        return meta

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        """One image output (PNG, or JPEG when the PNG is large) with `imagen4` at the top of its metadata,
        where notebook tools read a cell image's provenance."""
        data = self.to_png()
        mime = "image/png"
        if len(data) > MAX_INLINE_PNG:
            buf = io.BytesIO()
            self.image.convert("RGB").save(buf, format="JPEG", quality=88)
            data, mime = buf.getvalue(), "image/jpeg"
        bundle = {mime: base64.b64encode(data).decode("ascii"), "text/plain": repr(self)}
        return bundle, {"imagen4": self.output_metadata(mime, data)}

    def __getattr__(self, name: str) -> Any:
        # contact_sheet() used to return the PIL image: its attributes and methods (size, width, resize, ...)
        # still answer; `save` is the sheet's own (it keeps the provenance)
        image = self.__dict__.get("image")
        if image is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(image, name)

    def __repr__(self) -> str:
        failed = sum(1 for row in self.cells for it in row if getattr(it, "state", "success") != "success")
        return (f"<Grid {self.kind} {len(self.row_labels)}x{len(self.col_labels)} "
                f"{self.image.width}x{self.image.height}px{f', {failed} without images' if failed else ''}>"
                + "".join(f"\n  {line}" for line in self.summary))


def _run_grid(row_values: list, col_values: list, make_item, *, row_label, col_label, kind: str,
              title: str | None, cell_size: int, batch_options: dict) -> Any:
    from .batch import generate_many
    from .budget import BatchPlan

    if not row_values or not col_values:
        raise ValueError("A grid needs at least one row and one column.")
    items = [make_item(r, c) for r in row_values for c in col_values]
    result = generate_many(items, **batch_options)
    if isinstance(result, BatchPlan):  # dry_run: nothing was sent, there is nothing to draw
        return result
    n_cols = len(col_values)
    cells = [list(result.items[r * n_cols:(r + 1) * n_cols]) for r in range(len(row_values))]
    rows = [row_label(v) for v in row_values]
    cols = [col_label(v) for v in col_values]
    image, layout = compose(cells, row_labels=rows, col_labels=cols, title=title, cell_size=cell_size)
    return Grid(image, layout, row_labels=rows, col_labels=cols, cells=cells, batch=result, title=title, kind=kind,
                simulated=made_on_simulator(result.items, batch_options))


def any_simulated(items: Sequence[Any]) -> bool:
    """Whether the kernel's session knows any of these items' tasks as made by a simulator (False without one)."""
    from ..records.session import current_session

    session = current_session()
    return session is not None and any(
        (tid := getattr(item, "task_id", None)) and session.is_simulated(tid) for item in items)


def made_on_simulator(items: Sequence[Any], batch_options: dict) -> bool:
    """Whether a simulator made any of a batch's images: the client's word (`client=`), else the session's record
    of each task (`session=`, or the notebook's)."""
    client = batch_options.get("client")
    if client is not None:
        return client.simulated is True
    from .batch import default_session

    session = batch_options.get("session") or default_session()
    return any(item.task_id and session.is_simulated(item.task_id) for item in items)


def prompt_seed_grid(prompts: Sequence[str], seeds: Sequence[Any], *, aspect_ratio: str | None = None,
                     negative_prompt: str | None = None, num_images: int = 1, title: str | None = None,
                     cell_size: int = 256, model: str | None = None, **batch_options: Any) -> Any:
    """One row per prompt, one column per seed: runs the batch (see `generate_many` for session=, client=,
    concurrency=, force=, reuse=, progress=, timeout=, budget=) and returns the labelled `Grid`.

    `model`: `standard` (default), `fast` or `ultra`; `aspect_ratio=None` takes the model's default."""
    if isinstance(prompts, str) or isinstance(seeds, (str, int)):
        raise TypeError("prompts and seeds must be lists (wrap a single one in [...]).")
    spec = model_spec(model)
    ratio = aspect_ratio if aspect_ratio is not None else spec.default_ratio
    if title is None:
        title = (f"prompt x seed · {spec.short} · {ratio}"
                 + (f" · negative: {negative_prompt}" if negative_prompt else ""))
    return _run_grid(list(prompts), list(seeds),
                     lambda p, s: {"prompt": p, "seed": s, "aspect_ratio": ratio, "model": spec.name,
                                   "negative_prompt": negative_prompt, "num_images": num_images},
                     row_label=str, col_label=lambda s: "no seed" if s is None else f"seed {s}",
                     kind="prompt x seed", title=title, cell_size=cell_size, batch_options=batch_options)


def prompt_ratio_grid(prompts: Sequence[str], aspect_ratios: Sequence[str] = ASPECT_RATIOS, *,
                      seed: Any = None, negative_prompt: str | None = None, num_images: int = 1,
                      title: str | None = None, cell_size: int = 256, model: str | None = None,
                      **batch_options: Any) -> Any:
    """One row per prompt, one column per aspect ratio (all five by default); returns the labelled `Grid`
    (the `BatchPlan` with dry_run=True). `model`: `standard` (default), `fast` or `ultra`."""
    if isinstance(prompts, str) or isinstance(aspect_ratios, str):
        raise TypeError("prompts and aspect_ratios must be lists (wrap a single one in [...]).")
    spec = model_spec(model)
    if title is None:
        title = f"prompt x aspect ratio · {spec.short}" + (f" · seed {seed}" if seed is not None else "")
    return _run_grid(list(prompts), list(aspect_ratios),
                     lambda p, a: {"prompt": p, "seed": seed, "aspect_ratio": a, "model": spec.name,
                                   "negative_prompt": negative_prompt, "num_images": num_images},
                     row_label=str, col_label=str, kind="prompt x aspect ratio", title=title,
                     cell_size=cell_size, batch_options=batch_options)
