"""Drawing a contact sheet: the pictures of each cell (results, jobs, batch items, images, paths), labels
wrapped to the cell width with Pillow's default font, and the pixel `Layout` of everything drawn (`compose`).
`grids.py` builds the public `contact_sheet` and the X/Y grids on it."""
from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.models import short_name
from .results import FAILURE_BUCKETS, BatchItem

BACKGROUND = (255, 255, 255)
INK = (17, 17, 17)
MUTED = (110, 110, 110)
EMPTY = (232, 232, 232)
FAILED = (254, 226, 226)


# -- cell contents ----------------------------------------------------------------------------------
def _cell_images(item: Any) -> tuple[list[Any], str | None, bool]:
    """The PIL images of one cell, a short note when there are none (failed, lost, empty), and whether that
    is a failure (the cell is tinted)."""
    from PIL import Image

    if item is None:
        return [], "", False
    if isinstance(item, (list, tuple)):
        images: list[Any] = []
        note, failed = None, False
        for part in item:
            got, why, bad = _cell_images(part)
            images.extend(got)
            note, failed = note or why, failed or bad
        return images, (None if images else note), failed and not images
    if isinstance(item, Image.Image):
        return [item], None, False
    if isinstance(item, (bytes, bytearray)):
        return [Image.open(io.BytesIO(bytes(item)))], None, False
    if isinstance(item, (str, os.PathLike)):
        return [Image.open(item)], None, False
    if isinstance(item, BatchItem):  # its state in words, through the batch's one mapping
        if item.state != "success":
            return [], item.label, item.view.bucket in FAILURE_BUCKETS
        return _cell_images(item.images)
    if hasattr(item, "done") and hasattr(item, "images") and callable(item.done):  # a Job
        if not item.done():
            return [], item.status, False
        if item.error is not None:
            return [], item.status, True
        return _cell_images(item.images)
    if hasattr(item, "images"):  # a Result
        return _cell_images(list(item.images))
    if hasattr(item, "path") and hasattr(item, "sha256"):  # a StoredImage
        return [Image.open(item.path)], None, False
    raise TypeError(f"contact_sheet cannot show a {type(item).__name__}; pass results, jobs, images or paths.")


def _tile(images: list[Any], box: tuple[int, int]) -> Any:
    """One cell's picture: a single thumbnail, or several tiled, fitting inside `box`."""
    from PIL import Image

    k = len(images)
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    sub_w, sub_h = box[0] // cols, box[1] // rows
    thumbs = []
    for im in images:
        im = im.convert("RGB")
        im.thumbnail((sub_w, sub_h), Image.Resampling.LANCZOS)
        thumbs.append(im)
    if k == 1:
        return thumbs[0]
    tw = max(t.width for t in thumbs)
    th = max(t.height for t in thumbs)
    sheet = Image.new("RGB", (tw * cols, th * rows), BACKGROUND)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        sheet.paste(t, (c * tw + (tw - t.width) // 2, r * th + (th - t.height) // 2))
    return sheet


# -- text ---------------------------------------------------------------------------------------------
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; long words are cut; the last line ends with ... if text remains
    (three dots: the default font has no ellipsis glyph)."""
    def fits(s: str) -> bool:
        return font.getlength(s) <= width

    words = " ".join(str(text).split()).split(" ")
    lines: list[str] = []
    line = ""
    i = 0
    while i < len(words):
        word = words[i]
        candidate = f"{line} {word}" if line else word
        if fits(candidate):
            line = candidate
            i += 1
            continue
        if not line:  # a single word wider than the line: cut it
            lo, hi = 1, len(word)  # the longest prefix that fits (at least one character)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(word[:mid]) else (lo, mid - 1)
            cut = lo
            line, words[i] = word[:cut], word[cut:]
            if not words[i]:
                i += 1
        lines.append(line)
        line = ""
        if len(lines) == max_lines:
            break
    if line and len(lines) < max_lines:
        lines.append(line)
        i = len(words)
    if i < len(words) and lines:
        last = lines[-1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return lines or [""]


# -- layout -------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """Pixel boxes (x0, y0, x1, y1) of everything drawn on a sheet, for tests and image maps."""

    cells: list[list[tuple[int, int, int, int]]] = field(default_factory=list)
    images: list[list[tuple[int, int, int, int] | None]] = field(default_factory=list)
    row_labels: list[tuple[int, int, int, int]] = field(default_factory=list)
    col_labels: list[tuple[int, int, int, int]] = field(default_factory=list)
    title: tuple[int, int, int, int] | None = None
    captions: list[list[tuple[int, int, int, int] | None]] = field(default_factory=list)  # under each cell
    caption_texts: list[list[str | None]] = field(default_factory=list)
    footer: tuple[int, int, int, int] | None = None  # the summary lines under the cells


def cell_model(item: Any) -> str | None:
    """The model behind a cell (the full name of its request's model), or None (an image, a path, empty)."""
    if isinstance(item, (list, tuple)):
        return next((m for m in map(cell_model, item) if m), None)
    request = getattr(item, "request", None)
    return getattr(request, "model", None)


def _captions(matrix: list[list[Any]], captions: Any) -> list[list[str | None]] | None:
    """The caption of every cell: None/True/False pick the models' short names, a sequence gives texts."""
    if captions is False:
        return None
    if captions is None or captions is True:
        models = [[cell_model(it) for it in row] for row in matrix]
        if captions is None and len({m for row in models for m in row if m}) < 2:
            return None  # one model (or none known): nothing to tell apart
        return [[short_name(m) if m else None for m in row] for row in models]
    texts = [None if t is None else str(t) for t in captions]
    n_cols = max((len(r) for r in matrix), default=0)
    if len(texts) > len(matrix) * n_cols:
        raise ValueError(f"{len(texts)} captions for {len(matrix) * n_cols} cells.")
    texts += [None] * (len(matrix) * n_cols - len(texts))
    return [texts[r * n_cols:(r + 1) * n_cols] for r in range(len(matrix))]


def as_matrix(items: Any, rows: int | None, cols: int | None, n_row_labels: int, n_col_labels: int
              ) -> list[list[Any]]:
    """The cells of a sheet as rows: a list of rows as given, or a flat list laid out in `rows` x `cols` (or as
    the labels or a square say); a BatchResult gives its items."""
    if hasattr(items, "items") and hasattr(items, "batch_id"):  # a BatchResult
        items = list(items.items)
    items = list(items)
    if items and all(isinstance(r, list) for r in items) and rows is None and cols is None:
        width = max((len(r) for r in items), default=0)
        return [list(r) + [None] * (width - len(r)) for r in items]
    n = len(items)
    if cols is None:
        if n_col_labels:
            cols = n_col_labels
        elif rows:
            cols = math.ceil(n / rows)
        elif n_row_labels:
            cols = math.ceil(n / n_row_labels)
        else:
            cols = max(1, math.ceil(math.sqrt(n)))
    if rows is None:
        rows = max(n_row_labels, math.ceil(n / cols) if cols else 0)
    if rows * cols < n:
        raise ValueError(f"{n} items do not fit in {rows} rows x {cols} columns.")
    padded = items + [None] * (rows * cols - n)
    return [padded[r * cols:(r + 1) * cols] for r in range(rows)]


def compose(items: Any, *, rows: int | None = None, cols: int | None = None,
            row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            title: str | None = None, cell_size: int = 256, padding: int = 8,
            label_width: int | None = None, font_size: int = 13, captions: Any = None,
            footer: Sequence[str] | None = None) -> tuple[Any, Layout]:
    """Draw a contact sheet; returns (PIL image, Layout of the boxes). `captions`: see `contact_sheet`;
    `footer`: lines of text under the cells (a grid's summary per model)."""
    from PIL import Image, ImageDraw

    if not 16 <= cell_size <= 1024:
        raise ValueError("cell_size must be from 16 to 1024 pixels.")
    row_labels = [str(x) for x in row_labels] if row_labels is not None else []
    col_labels = [str(x) for x in col_labels] if col_labels is not None else []
    matrix = as_matrix(items, rows, cols, len(row_labels), len(col_labels))
    n_rows, n_cols = len(matrix), max((len(r) for r in matrix), default=0)
    if row_labels and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows.")
    if col_labels and len(col_labels) != n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns.")
    cap_texts = _captions(matrix, captions)

    # the pictures first: they decide the cell box (the largest thumbnail fitting in cell_size)
    pictures: list[list[Any]] = []
    notes: list[list[str | None]] = []
    tints: list[list[bool]] = []
    for row in matrix:
        pics, why, bad = [], [], []
        for item in row:
            images, note, failed = _cell_images(item)
            pics.append(_tile(images, (cell_size, cell_size)) if images else None)
            why.append(note)
            bad.append(failed)
        pictures.append(pics)
        notes.append(why)
        tints.append(bad)
    sizes = [p.size for r in pictures for p in r if p is not None]
    box_w = max((s[0] for s in sizes), default=cell_size)
    box_h = max((s[1] for s in sizes), default=cell_size)

    font = _font(font_size)
    title_font = _font(font_size + 3)
    line_h = font_size + 4
    pad = padding
    cap_h = line_h if cap_texts else 0  # one line under every cell
    row_h = box_h + cap_h
    grid_w = n_cols * box_w + (n_cols - 1) * pad
    if row_labels:
        label_w = label_width or max(90, min(220, box_w))
        row_lines = [_wrap(t, font, label_w, max(1, row_h // line_h)) for t in row_labels]
    else:
        label_w, row_lines = 0, []
    col_lines = [_wrap(t, font, box_w, 3) for t in col_labels]
    col_h = (max(len(c) for c in col_lines) * line_h + pad) if col_lines else 0
    width = pad + (label_w + pad if label_w else 0) + grid_w + pad
    title_lines = _wrap(title, title_font, width - 2 * pad, 2) if title else []
    title_h = len(title_lines) * (font_size + 7) + pad if title_lines else 0
    footer_lines = [line for text in (footer or []) for line in _wrap(text, font, width - 2 * pad, 2)]
    footer_h = len(footer_lines) * line_h + pad if footer_lines else 0
    height = pad + title_h + col_h + n_rows * row_h + (n_rows - 1) * pad + pad + footer_h

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    layout = Layout()
    x_grid = pad + (label_w + pad if label_w else 0)
    y_grid = pad + title_h + col_h
    if title_lines:
        y: float = pad  # pixels down the sheet (a float: the row labels below are centred)
        for line in title_lines:
            draw.text((pad, y), line, fill=INK, font=title_font)
            y += font_size + 7
        layout.title = (pad, pad, width - pad, pad + title_h - pad)
    for c, lines in enumerate(col_lines):
        x0 = x_grid + c * (box_w + pad)
        y = pad + title_h + (col_h - pad - len(lines) * line_h)  # bottom-aligned above the cells
        for line in lines:
            tw = font.getlength(line)
            draw.text((x0 + (box_w - tw) / 2, y), line, fill=INK, font=font)
            y += line_h
        layout.col_labels.append((x0, pad + title_h, x0 + box_w, y_grid - pad // 2))
    for r, lines in enumerate(row_lines):
        y0 = y_grid + r * (row_h + pad)
        y = y0 + (row_h - len(lines) * line_h) / 2
        for line in lines:
            draw.text((pad, y), line, fill=INK, font=font)
            y += line_h
        layout.row_labels.append((pad, y0, pad + label_w, y0 + row_h))
    for r, row in enumerate(pictures):
        cells: list[tuple[int, int, int, int]] = []
        placed: list[tuple[int, int, int, int] | None] = []
        caps: list[tuple[int, int, int, int] | None] = []
        for c in range(n_cols):
            x0 = x_grid + c * (box_w + pad)
            y0 = y_grid + r * (row_h + pad)
            cells.append((x0, y0, x0 + box_w, y0 + box_h))
            caps.append(_caption(draw, font, cap_texts[r][c] if cap_texts else None, (x0, y0 + box_h, box_w, cap_h)))
            pic = row[c] if c < len(row) else None
            if pic is not None:
                px, py = x0 + (box_w - pic.width) // 2, y0 + (box_h - pic.height) // 2
                sheet.paste(pic, (px, py))
                placed.append((px, py, px + pic.width, py + pic.height))
                continue
            placed.append(None)
            note = notes[r][c] if c < len(notes[r]) else ""
            if note is None or (note == "" and matrix[r][c] is None):
                continue  # an empty slot stays blank
            draw.rectangle(cells[-1], fill=FAILED if c < len(tints[r]) and tints[r][c] else EMPTY)
            text = _wrap(note or "no image", font, box_w - 8, 2)
            ty = y0 + (box_h - len(text) * line_h) / 2
            for line in text:
                draw.text((x0 + (box_w - font.getlength(line)) / 2, ty), line, fill=MUTED, font=font)
                ty += line_h
        layout.cells.append(cells)
        layout.images.append(placed)
        if cap_texts:
            layout.captions.append(caps)
            layout.caption_texts.append(list(cap_texts[r]))
    if footer_lines:
        y0 = height - pad - footer_h + pad
        for i, line in enumerate(footer_lines):
            draw.text((pad, y0 + i * line_h), line, fill=INK, font=font)
        layout.footer = (pad, y0, width - pad, y0 + len(footer_lines) * line_h)
    return sheet, layout


def _caption(draw: Any, font: Any, text: str | None, box: tuple[int, int, int, int]) -> tuple | None:
    """One caption line centred under a cell (x, y, width, height); its box, or None when there is none."""
    x0, y0, width, height = box
    if not text:
        return None
    line = _wrap(text, font, width - 4, 1)[0]
    draw.text((x0 + (width - font.getlength(line)) / 2, y0 + 1), line, fill=MUTED, font=font)
    return (x0, y0, x0 + width, y0 + height)
