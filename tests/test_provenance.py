"""Provenance inside saved image files: PNG iTXt, JPEG comment and XMP; read back; pixels untouched."""
from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from imagen4_jupyter.api.provenance import embed, read_provenance, write

INFO = {"task_id": "task_google_1", "model": "google/imagen4-ultra", "sha256": "ab" * 32,
        "request": {"prompt": "a fox — «café» 🦊", "seed": "7", "aspect_ratio": "1:1", "model": "google/imagen4-ultra"},
        "simulated": True}


def image_bytes(fmt: str) -> bytes:
    im = Image.new("RGB", (40, 30), (200, 30, 90))
    out = io.BytesIO()
    im.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_round_trip_and_the_pixels_are_unchanged(tmp_path, fmt, mime):
    raw = image_bytes(fmt)
    path = write(tmp_path / "out" / f"fox.{fmt.lower()}", raw, mime, INFO)
    assert read_provenance(path) == INFO
    with Image.open(io.BytesIO(raw)) as a, Image.open(path) as b:
        assert a.tobytes() == b.tobytes() and a.size == b.size
    again = embed(path.read_bytes(), mime, {**INFO, "task_id": "task_google_2"})  # re-saving replaces, not adds
    (tmp_path / "again").write_bytes(again)
    assert read_provenance(tmp_path / "again")["task_id"] == "task_google_2"
    assert again.count(b"task_google_1") == 0


def test_common_readers_see_it(tmp_path):
    png = write(tmp_path / "a.png", image_bytes("PNG"), "image/png", INFO)
    with Image.open(png) as im:
        assert "imagen4" in im.text and "Description" in im.text
        assert "a fox" in im.text["Description"]
    jpg = write(tmp_path / "a.jpg", image_bytes("JPEG"), "image/jpeg", INFO)
    with Image.open(jpg) as im:
        assert b"task_google_1" in im.info["comment"]
        xmp = im.info.get("xmp") or b""
        assert b"dc:description" in xmp and b"task_google_1" in xmp


def test_files_without_ours_read_none(tmp_path):
    (tmp_path / "plain.png").write_bytes(image_bytes("PNG"))
    (tmp_path / "plain.jpg").write_bytes(image_bytes("JPEG"))
    (tmp_path / "x.txt").write_bytes(b"hello")
    assert read_provenance(tmp_path / "plain.png") is None
    assert read_provenance(tmp_path / "plain.jpg") is None
    assert read_provenance(tmp_path / "x.txt") is None
    raw = image_bytes("PNG")
    assert hashlib.sha256(raw).hexdigest() != hashlib.sha256(embed(raw, "image/png", INFO)).hexdigest()
