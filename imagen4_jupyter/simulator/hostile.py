"""Hostile or broken image bodies, for the ``image`` faults ``huge_png``, ``oversize`` and ``mislabeled``.

* :func:`huge_png`: a valid-looking PNG of a few hundred bytes whose IHDR declares a huge size (default
  12000x12000) over a tiny, truncated IDAT: opening it is cheap, decoding it is a bomb.
* :func:`pad_png`: the same picture, still a valid PNG, made at least N bytes long by a private
  ancillary chunk before IEND (decoders skip it).
* :func:`as_jpeg`: the picture re-encoded as JPEG, to be served as ``image/png``.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

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
