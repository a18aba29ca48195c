"""Downloaded images: type sniffing, completeness checks, sha256 content-addressed files, bounded previews.

Pillow is imported lazily (only for previews and non-PNG sizes) so importing the package stays fast. Nothing
is decoded before its header's size is checked against MAX_PIXELS (a few-hundred-byte PNG can declare 144
megapixels: decoding it would take ~430 MB); Pillow's own `Image.MAX_IMAGE_PIXELS` check is the second line.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DownloadError

MIME_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MAX_PIXELS = 64_000_000  # Imagen 4 makes ~1-4 megapixels; more than this is refused before any decoding


def is_sha256(text: str) -> bool:
    """True for a lowercase sha256 hex digest: what the image store names its files by."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def store_digest(name: str) -> str | None:
    """The sha256 in a store file name `<sha256>.<png|jpg|webp>`, or None for any other name."""
    stem, _, ext = name.partition(".")
    return stem if ext in MIME_EXT.values() and is_sha256(stem) else None


def sniff(data: bytes) -> str | None:
    """The image MIME type from the magic bytes, or None if these are not image bytes we accept."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_complete(data: bytes, mime: str) -> bool:
    """True if the bytes end the way a whole file of this type ends (catches truncated downloads)."""
    if mime == "image/png":
        return data[-12:-4] == b"\x00\x00\x00\x00IEND"
    if mime == "image/jpeg":
        return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"  # some encoders pad after EOI
    if mime == "image/webp":
        return len(data) >= 8 + struct.unpack("<I", data[4:8])[0]
    return False


def dimensions(data: bytes, mime: str) -> tuple[int, int]:
    """(width, height) from the header only: never decodes the pixels."""
    if mime == "image/png" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header (Pillow refuses > 2x MAX_IMAGE_PIXELS)
        return im.size


def check_pixels(width: int, height: int, task_id: str | None = None) -> None:
    """Refuse an image whose header declares more than MAX_PIXELS (a final DownloadError), before decoding."""
    if width * height > MAX_PIXELS:
        raise DownloadError(f"The image declares {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), "
                            f"over the {MAX_PIXELS / 1e6:.0f}-megapixel limit: refused without decoding it (a "
                            "decompression bomb or a broken file).", task_id=task_id, retryable=False)


def header_size(data: bytes, task_id: str | None = None) -> tuple[int, int]:
    """The checked (width, height) of image bytes, from the header; raises DownloadError for a huge one."""
    mime = sniff(data)
    if mime is None:
        raise DownloadError("The file is not a PNG, JPEG or WebP image.", task_id=task_id, retryable=False)
    try:
        width, height = dimensions(data, mime)
    except Exception as exc:  # Pillow's bomb error or an unreadable header
        raise DownloadError(f"The image header cannot be read safely ({type(exc).__name__}).", task_id=task_id,
                            retryable=False) from None
    check_pixels(width, height, task_id)
    return width, height


@dataclass
class StoredImage:
    """One image file on disk, named by its sha256. `data` reads the bytes."""

    path: Path
    sha256: str
    mime: str
    width: int
    height: int
    size: int
    url: str | None = None
    index: int = 0
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def data(self) -> bytes:
        return Path(self.path).read_bytes()

    def _repr_png_(self):
        return self.data if self.mime == "image/png" else None

    def _repr_jpeg_(self):
        return self.data if self.mime == "image/jpeg" else None

    def save(self, path: str | os.PathLike, *, task_id: str | None = None, request: Any = None,
             model: str | None = None, simulated: bool | None = None) -> Path:
        """Copy the image to `path` (folders created) with its provenance written inside: task id, model, the
        full request, the original's sha256 and, if known, "simulated" (`read_provenance(path)` reads it back).
        Arguments override what the image knows of its task (`meta`, filled when it was downloaded). The
        content-addressed original is left unchanged. Returns the path."""
        from .provenance import write

        info = {**self.meta}
        for key, value in (("task_id", task_id), ("request", request), ("model", model), ("simulated", simulated)):
            if value is not None:
                info[key] = value
        req = info.get("request")
        if req is not None and not isinstance(req, dict):
            info["request"] = req.to_dict()  # a GenerationRequest
        if not info.get("model") and isinstance(info.get("request"), dict):
            info["model"] = info["request"].get("model")
        info["sha256"] = self.sha256
        return write(path, self.data, self.mime, info)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "mime": self.mime, "width": self.width,
                "height": self.height, "size": self.size, "url": self.url, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict) -> "StoredImage":
        return cls(path=Path(d["path"]), sha256=d["sha256"], mime=d["mime"], width=int(d["width"]),
                   height=int(d["height"]), size=int(d["size"]), url=d.get("url"), index=int(d.get("index", 0)))


class ImageStore:
    """A folder of images named `<sha256>.<ext>`; writes are atomic and never leave the folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def put(self, data: bytes, *, url: str | None = None, index: int = 0, task_id: str | None = None) -> StoredImage:
        mime = sniff(data)
        if mime is None:
            raise DownloadError("The downloaded file is not a PNG, JPEG or WebP image.", task_id=task_id)
        if not check_complete(data, mime):
            raise DownloadError("The downloaded image is truncated.", task_id=task_id)
        width, height = header_size(data, task_id)  # before it is stored, and before anything decodes it
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, mime)
        if not self._holds(path, digest):  # absent, or damaged since: (re)write it
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
        return StoredImage(path=path, sha256=digest, mime=mime, width=width, height=height, size=len(data),
                           url=url, index=index, meta={"task_id": task_id} if task_id else {})

    @staticmethod
    def _holds(path: Path, digest: str) -> bool:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == digest
        except OSError:
            return False

    def path_for(self, digest: str, mime: str) -> Path:
        if not is_sha256(digest):
            raise ValueError("not a sha256 hex digest")
        return self.root / f"{digest}.{MIME_EXT[mime]}"

    def verify(self, image: StoredImage) -> bool:
        """True if the file is still there and still has its sha256."""
        return self._holds(Path(image.path), image.sha256)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename, so a reader never
    sees half a file (the temporary file is removed if anything fails)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def preview(data: bytes, max_side: int = 768, quality: int = 85) -> tuple[bytes, str]:
    """A bounded preview: at most `max_side` pixels on the longer side, as JPEG (or the original if smaller).
    An image declaring more than MAX_PIXELS raises DownloadError, checked before anything is decoded."""
    from PIL import Image

    if sniff(data) is not None:
        header_size(data)
    with Image.open(io.BytesIO(data)) as im:
        check_pixels(*im.size)  # what Pillow itself read, before any pixel is
        if max(im.size) <= max_side and len(data) <= 300_000:
            return data, sniff(data) or "image/png"
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=quality, optimize=True)
        return out.getvalue(), "image/jpeg"


def thumbnail(path: Any, side: int = 72) -> tuple[bytes, str]:
    """(bytes, mime) of a small preview of an image file; one from the image store (named by its sha256) is
    cached on disk in `.thumbs/` beside it.

    Decoding a 1024x1024 PNG costs ~20 ms, so a history page of 20 tasks would take most of a second; the
    cached copy is a ~3 KB read. It is remade when the image file is newer than it.
    """
    path = Path(path)
    if not is_sha256(path.stem):
        return preview(path.read_bytes(), side, quality=70)  # not a store file: no cache folder beside it
    cached = path.parent / ".thumbs" / f"{path.stem}-{side}"
    try:
        if cached.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            data = cached.read_bytes()
            mime = sniff(data)
            if mime:
                return data, mime
    except OSError:
        pass
    data, mime = preview(path.read_bytes(), side, quality=70)
    try:
        cached.parent.mkdir(exist_ok=True)
        write_atomic(cached, data)
    except OSError:  # a read-only folder or a full disk: no cache, same picture
        pass
    return data, mime


def prepare_thumbnails(job: Any) -> None:
    """Make the history table's thumbnails of a finished job's images now (in the poller thread), so a history
    page reads small cached files instead of decoding full images (~20 ms each) while the user waits."""
    for image in job.images:
        try:
            thumbnail(image.path)
        except Exception:  # only a cache: the table makes it itself if this failed
            pass
