"""Deterministic synthetic PNGs standing in for Imagen 4 output.

Pictures are smooth colour fields with a few soft shapes and the prompt
printed small, all derived from a hash of the request, so the same
(prompt, negative prompt, aspect ratio, seed, index, size) always yields
byte-identical PNG bytes. Rendering uses only PIL operations (no per-pixel
Python loops): a 1024x1024 image takes a few tens of milliseconds.

Also the hostile or broken image bodies of the ``image`` faults ``huge_png``, ``oversize`` and ``mislabeled``:

* :func:`huge_png`: a valid-looking PNG of a few hundred bytes whose IHDR declares a huge size (default
  12000x12000) over a tiny, truncated IDAT: opening it is cheap, decoding it is a bomb.
* :func:`pad_png`: the same picture, still a valid PNG, made at least N bytes long by a private
  ancillary chunk before IEND (decoders skip it).
* :func:`as_jpeg`: the picture re-encoded as JPEG, to be served as ``image/png``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import textwrap
import threading
import zlib
from collections import OrderedDict
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: Output size (width, height) per aspect ratio, before ``image_scale``.
BASE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1408, 768),
    "9:16": (768, 1408),
    "4:3": (1280, 896),
    "3:4": (896, 1280),
}


def image_size(aspect_ratio: str, scale: float = 1.0) -> tuple[int, int]:
    """Pixel size for an aspect ratio, scaled by ``scale`` (at least 1x1)."""
    width, height = BASE_SIZES[aspect_ratio]
    return max(1, round(width * scale)), max(1, round(height * scale))


def image_key(
    prompt: str,
    negative_prompt: str,
    aspect_ratio: str,
    seed_material: str,
    index: int,
    size: tuple[int, int],
) -> str:
    """Stable hex digest identifying one synthetic image."""
    blob = json.dumps(
        [prompt, negative_prompt, aspect_ratio, seed_material, index, list(size)],
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def _colour(rng: random.Random, alpha: int | None = None) -> tuple[int, ...]:
    rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return rgb if alpha is None else (*rgb, alpha)


def render_png(key: str, size: tuple[int, int], caption: str = "") -> bytes:
    """Render the PNG for ``key`` (from :func:`image_key`) at ``size``."""
    rng = random.Random(key)
    width, height = size

    # Background: a 3x3 grid of random colours upscaled -> smooth gradients.
    grid = Image.new("RGB", (3, 3))
    grid.putdata([_colour(rng) for _ in range(9)])
    img = grid.resize(size, Image.Resampling.BILINEAR)

    # A few soft shapes, drawn small, blurred and upscaled (cheap soft edges).
    sw, sh = max(1, width // 16), max(1, height // 16)
    layer = Image.new("RGBA", (sw, sh), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.uniform(-0.2, 0.9) * sw, rng.uniform(-0.2, 0.9) * sh
        x1 = x0 + rng.uniform(0.1, 0.6) * sw
        y1 = y0 + rng.uniform(0.1, 0.6) * sh
        shape = draw.ellipse if rng.random() < 0.7 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_colour(rng, rng.randint(90, 200)))
    layer = layer.filter(ImageFilter.GaussianBlur(1.2)).resize(size, Image.Resampling.BILINEAR)
    img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")

    if caption and height >= 96 and width >= 96:
        _draw_caption(img, caption, key)
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _draw_caption(img: Image.Image, caption: str, key: str) -> None:
    width, height = img.size
    font_px = max(10, height // 48)
    font = _font(font_px)
    chars = max(10, int(width / (font_px * 0.55)))
    lines = textwrap.wrap(caption[:400], chars)[:6] + [f"imagen4 simulator - {key[:12]}"]
    text = "\n".join(lines)
    draw = ImageDraw.Draw(img, "RGBA")
    margin = font_px
    try:
        box = draw.multiline_textbbox((margin, 0), text, font=font)
    except (UnicodeError, ValueError):
        text = text.encode("ascii", "replace").decode("ascii")
        box = draw.multiline_textbbox((margin, 0), text, font=font)
    top = height - (box[3] - box[1]) - 2 * margin
    draw.rectangle((0, top - margin // 2, width, height), fill=(0, 0, 0, 110))
    overlay_text = (255, 255, 255, 255)
    try:
        draw.multiline_text((margin, top), text, font=font, fill=overlay_text)
    except (UnicodeError, ValueError):
        safe = text.encode("ascii", "replace").decode("ascii")
        draw.multiline_text((margin, top), safe, font=font, fill=overlay_text)


class ImageCache:
    """Small thread-safe LRU of rendered PNG bytes, bounded by total size."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str, size: tuple[int, int], caption: str) -> bytes:
        """Return cached bytes for ``key``, rendering them on a miss."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                return data
        data = render_png(key, size, caption)
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._size += len(data)
                while self._size > self.max_bytes and len(self._items) > 1:
                    _, old = self._items.popitem(last=False)
                    self._size -= len(old)
        return data

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# -- hostile or broken bodies (the image faults) ----------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HUGE = (12000, 12000)


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int = HUGE[0], height: int = HUGE[1]) -> bytes:
    """A small file declaring ``width`` x ``height`` RGB pixels (8 bits), with one row of real data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x80" * (3 * min(width, 64))
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row)) + chunk(b"IEND", b"")


def pad_png(data: bytes, size: int) -> bytes:
    """``data`` (a PNG) grown to at least ``size`` bytes with a private ``prVt`` chunk before IEND."""
    iend = chunk(b"IEND", b"")
    if not data.endswith(iend) or len(data) >= size:
        return data
    filler = max(0, size - len(data) - 12)
    return data[: -len(iend)] + chunk(b"prVt", b"\x00" * filler) + iend


def as_jpeg(data: bytes) -> bytes:
    """The picture of ``data`` (a PNG) as JPEG bytes."""
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()
