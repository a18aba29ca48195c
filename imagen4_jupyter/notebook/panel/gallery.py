"""The panel's gallery: thumbnails of finished images (newest first) and a larger view of one, with Save as.

Thumbnails come from the image store's one cache (`api.store.thumbnail`, small files beside the images) and show
the whole image at its ratio in a square tile (letterboxed in the theme's background: a 9:16 or 16:9 image is
never cropped); the caption names the model, the ratio, the seed and the image's place in its task
("standard · 16:9 · seed 11 · 1/2"). The larger view is a bounded preview of the one image shown; its tile is marked.
"""
from __future__ import annotations

import threading
from pathlib import Path

import ipywidgets as W

from ...api.cards import esc
from ...api.job import Job
from ...api.models import DEFAULT_MODEL, short_name
from ...api.store import StoredImage, preview, thumbnail

MAX_GALLERY = 48  # newest images kept in the grid
VIEW_SIDE = 768  # longer side of the larger view, in pixels
THUMB_SCALE = 1.5  # thumbnails are made this much larger than the tile (sharp on high-density screens)
EMPTY_NOTE = "<i>Images appear here as tasks finish. Click one for a larger view.</i>"


def _button(description: str, css: str, icon: str = "") -> W.Button:
    button = W.Button(description=description, icon=icon, layout=W.Layout(width="auto"))
    button.add_class(css)
    return button


class Gallery(W.VBox):
    """`add(job)` puts a finished job's images first; `select((job, image))` opens the larger view. The
    view's Reuse and Copy seed buttons are wired by the panel (they act on the controls and the browser)."""

    def __init__(self, thumb_size: int = 200) -> None:
        self.thumb_size = thumb_size
        self.items: list[tuple[Job, StoredImage]] = []  # newest first
        self.selected: tuple[Job, StoredImage] | None = None
        self._cards: dict[str, W.Widget] = {}
        self._lock = threading.RLock()  # images arrive on the poller's threads
        columns = f"repeat(auto-fill, minmax({thumb_size}px, 1fr))"
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=columns, grid_gap="6px", width="100%"))
        self.grid.add_class("imagen4-gallery")
        self.note = W.HTML(EMPTY_NOTE)
        self.big = W.Image(format="png", layout=W.Layout(max_width="100%", max_height="420px",
                                                          object_fit="contain", align_self="flex-start"))
        self.big.add_class("imagen4-big")
        self.big_info = W.HTML(layout=W.Layout(width="100%", min_width="0"))
        self.big_info.add_class("imagen4-big-info")
        self.reuse = _button("Reuse these settings", "imagen4-reuse", "undo")
        self.copy_seed = _button("Copy seed", "imagen4-copy-seed", "copy")
        self.seed_copy = W.Text(layout=W.Layout(width="150px"), placeholder="no seed")
        self.seed_copy.add_class("imagen4-seed-copy")
        self.save_path = W.Text(layout=W.Layout(flex="1 1 360px", min_width="200px", max_width="640px"),
                                placeholder="file path (relative to the kernel's working folder)")
        self.save_path.add_class("imagen4-save-path")
        self.save = _button("Save as", "imagen4-save", "save")
        self.close_view = _button("Close", "imagen4-close-view")
        self.view_status = W.HTML()
        self.view_status.add_class("imagen4-view-status")
        wrap = {"flex_flow": "row wrap", "align_items": "center"}
        rows = [W.HBox([self.reuse, self.copy_seed, self.seed_copy, self.close_view], layout=W.Layout(**wrap)),
                W.HBox([self.save_path, self.save], layout=W.Layout(width="100%", **wrap))]
        for row in rows:
            row.add_class("imagen4-row")
        self.viewer = W.VBox([self.big, self.big_info, *rows, self.view_status],
                             layout=W.Layout(display="none", border="1px solid var(--jp-border-color2, #ddd)",
                                             padding="6px"))
        self.viewer.add_class("imagen4-viewer")
        super().__init__([self.viewer, self.note, self.grid])
        self.save.on_click(lambda _b: self.save_selected())
        self.close_view.on_click(lambda _b: self.select(None))

    def add(self, job: Job) -> None:
        """Put a finished job's images at the front of the grid (an image already there stays where it is)."""
        with self._lock:
            known = {(j.task_id, im.sha256) for j, im in self.items}
            new = [(job, im) for im in job.images if (job.task_id, im.sha256) not in known]
            if not new:
                return
            self.items = (new + self.items)[:MAX_GALLERY]
            keys = [f"{j.task_id}:{im.sha256}" for j, im in self.items]
            for key, (j, im) in zip(keys, self.items, strict=True):
                if key not in self._cards:
                    self._cards[key] = self._card(j, im)
            for key in [k for k in self._cards if k not in keys]:
                self._cards.pop(key).close()
            self.grid.children = tuple(self._cards[k] for k in keys)
            n = len(keys)
            self.note.value = f"<i>{n} image{'' if n == 1 else 's'}, newest first. Click one for a larger view.</i>"

    def _card(self, job: Job, image: StoredImage) -> W.Widget:
        try:
            data, mime = thumbnail(image.path, round(self.thumb_size * THUMB_SCALE))
        except Exception:  # file gone or unreadable: still show the card
            data, mime = b"", "image/png"
        text = caption(job, image)
        prompt = job.request.prompt if job.request else ""
        tip = f"{text}: {prompt[:300]}" if prompt else text
        side = f"{self.thumb_size}px"
        img = W.Image(value=data, format=mime.split("/")[-1],
                      layout=W.Layout(width="100%", height=side, object_fit="contain"))
        img.add_class("imagen4-thumb")
        zoom = W.Button(tooltip=f"Larger view of image {image.index + 1}")  # user text only in escaped HTML
        zoom.add_class("imagen4-zoom")
        zoom.on_click(lambda _b, j=job, im=image: self.select((j, im)))
        label = W.HTML(f"<span title='{esc(tip)}'>{esc(text)}</span>")
        label.add_class("imagen4-caption")
        box = W.Box([img, zoom], layout=W.Layout(width="100%", height=side))
        box.add_class("imagen4-thumb-box")
        card = W.VBox([box, label], layout=W.Layout(min_width="0"))
        card.add_class("imagen4-tile")
        return card

    def _mark_selected(self) -> None:
        key = f"{self.selected[0].task_id}:{self.selected[1].sha256}" if self.selected else None
        for k, card in self._cards.items():
            if k == key:
                card.add_class("imagen4-selected")
            else:
                card.remove_class("imagen4-selected")

    def select(self, item: tuple[Job, StoredImage] | None) -> None:
        """Show one image in the larger view (None closes it)."""
        self.selected = item
        with self._lock:
            self._mark_selected()
        if item is None:
            self.viewer.layout.display = "none"
            return
        job, image = item
        try:
            data, mime = preview(image.data, VIEW_SIDE)
        except Exception as err:
            data, mime = b"", "image/png"
            self.view_status.value = f"<span class='imagen4-reason'>Cannot read {esc(image.path)}: {esc(err)}</span>"
        else:
            self.view_status.value = ""
        self.big.format = mime.split("/")[-1]
        self.big.value = data
        req = job.request
        count = len(job.images) or 1
        model = f"{short_name(req.model or DEFAULT_MODEL)} · " if req else ""
        prompt = req.prompt if req else ""
        self.big_info.value = (
            f"<code>{esc(job.task_id)}</code> · image {image.index + 1}/{count} · {image.width}×{image.height} · "
            f"{model}{esc(req.aspect_ratio) if req else ''} · seed "
            f"<b>{esc(req.seed) if req and req.seed else '—'}</b>"
            f"<span class='imagen4-line' title='{esc(prompt[:2000])}'>{esc(prompt[:300])}</span>"
            f"<span class='imagen4-line imagen4-path' title='{esc(image.path)}'>{esc(image.path)}</span>")
        self.seed_copy.value = req.seed if req and req.seed else ""
        suffix = Path(image.path).suffix or ".png"
        self.save_path.value = f"imagen4-{job.task_id}-{image.index + 1}{suffix}"  # in the working folder
        self.viewer.layout.display = "flex"

    def save_selected(self, path: str | None = None) -> Path | None:
        """Copy the selected image's file to `path` (default: the "save as" box), with its provenance written
        inside (task id, model, request, the original's sha256); a folder keeps the name."""
        if self.selected is None:
            return None
        job, image = self.selected
        target = Path(path or self.save_path.value).expanduser()
        if not str(target).strip():
            self.view_status.value = "<span class='imagen4-reason'>Type a file path first.</span>"
            return None
        try:
            if target.is_dir():
                target = target / Path(image.path).name
            image.save(target, task_id=job.task_id, request=job.request,
                       model=job.request.model if job.request else None)
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            self.view_status.value = f"<span class='imagen4-reason'>Not saved: {esc(err)}</span>"
            return None
        self.view_status.value = f"Saved to <code>{esc(target)}</code>"
        return target

    def close(self) -> None:
        with self._lock:
            for card in self._cards.values():
                card.close()
            self._cards.clear()
        super().close()


def caption(job: Job, image: StoredImage) -> str:
    """`standard · 16:9 · seed 11 · 1/2`: model, ratio, seed and the image's place among its task's images."""
    req = job.request
    count = max(len(job.images), image.index + 1)
    place = f"{image.index + 1}/{count}"
    if req is None:
        return place
    model = f"{short_name(req.model or DEFAULT_MODEL)} · "
    return f"{model}{req.aspect_ratio} · seed {req.seed or '—'} · {place}"
