"""Image downloads (retries, truncation, expiry, content type) and the content-addressed store."""
from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from imagen4_jupyter import GenerationRequest
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.store import ImageStore, check_complete, sniff


def png_bytes(size=(8, 6), colour=(200, 10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def image_urls(sim, task_id):
    return sim.task(task_id).image_urls


@pytest.mark.parametrize("fault", [dict(truncate=True), dict(malformed=True), dict(drop=True),
                                   dict(http_status=502), dict(http_status=503)],
                         ids=["truncated", "corrupt-bytes", "dropped", "html502", "html503"])
def test_download_is_retried_and_the_stored_bytes_have_the_right_sha256(sim, client, fault):
    sim.inject("image", **fault)
    res = client.generate("x", seed="11", timeout=10)
    assert sim.count("image") == 2  # one failed attempt, one good one
    [img] = res.images
    on_disk = Path(img.path).read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == img.sha256 and Path(img.path).stem == img.sha256
    # the very bytes the service serves for this URL
    served = requests.get(res.result_urls[0], timeout=5).content
    assert served == on_disk and len(on_disk) == img.size
    assert check_complete(on_disk, "image/png")
    assert not [p for p in Path(img.path).parent.iterdir() if p.name.startswith(".part-")]


def test_truncated_download_detected_by_client_download(sim, client):
    task_id = client.create_task(GenerationRequest.create("x"))
    time.sleep(0.1)  # finished on the service
    url = image_urls(sim, task_id)[0]
    sim.inject("image", truncate=True)
    with pytest.raises(E.DownloadError) as info:
        client.download(url, task_id=task_id)
    assert info.value.retryable and info.value.task_id == task_id
    assert client.download(url).startswith(b"\x89PNG")


def test_expired_url_is_a_download_error_not_retried(sim, client):
    sim.inject("image", times=None, expired=True)
    job = client.submit("x")
    err = job.exception(10)
    assert isinstance(err, E.DownloadError) and not err.retryable
    assert "expired" in str(err) and job.task_id in str(err)
    assert sim.count("image") == 2 and sim.count("downloadUrl") == 1  # the URL, then once its fresh link


@pytest.mark.parametrize("status, says", [(403, "expired"), (410, "expired"), (400, "HTTP 400")])
def test_client_error_on_image_is_not_retried(sim, client, status, says):
    sim.inject("image", times=None, http_status=status)
    err = client.submit("x").exception(10)
    assert isinstance(err, E.DownloadError) and says in str(err) and not err.retryable
    assert sim.count("image") == (2 if says == "expired" else 1)  # an expired URL: once more, from a fresh link


def test_rate_limited_image_download_is_retried(sim, client):
    sim.inject("image", times=2, http_status=429)
    assert len(client.submit("x").wait(10).images) == 1
    assert sim.count("image") == 3


def test_naturally_expired_url(sim, client):
    sim.url_ttl = sim.retention = 0.0  # expired and no longer retained: no fresh link either (test_fresh_links.py)
    job = client.submit("x")
    with pytest.raises(E.DownloadError, match="expired"):
        job.wait(10)


def test_wrong_content_type_is_a_download_error(sim, client):
    sim.inject("image", times=None, content_type="text/html; charset=utf-8")
    job = client.submit("x")
    err = job.exception(10)
    assert isinstance(err, E.DownloadError) and "text/html" in str(err) and "not an image" in str(err)
    assert sim.count("image") == 1 and job.task_id in str(err)


def test_download_size_cap(sim, make_client):
    client = make_client(max_download_bytes=100)
    err = client.submit("x").exception(10)
    assert isinstance(err, E.DownloadError) and "larger than" in str(err) and "100 bytes" in str(err)


def test_download_refuses_non_http_urls(client):
    for url in ("file:///etc/passwd", "javascript:alert(1)", "ftp://x/1.png"):
        with pytest.raises(E.DownloadError, match="non-http"):
            client.download(url)


def test_same_request_and_seed_give_the_same_file(sim, client):
    a = client.generate("a fox", seed="5", timeout=10)
    b = client.generate("a fox", seed="5", timeout=10)
    c = client.generate("a fox", seed="6", timeout=10)
    assert a.task_id != b.task_id
    assert a.images[0].sha256 == b.images[0].sha256 and a.images[0].path == b.images[0].path
    assert c.images[0].sha256 != a.images[0].sha256
    assert len(list(client.store.root.glob("*.png"))) == 2


# -- the store itself -----------------------------------------------------------------------------

def test_store_put_verify_and_dimensions(tmp_path):
    store = ImageStore(tmp_path / "s")
    data = png_bytes((8, 6))
    img = store.put(data, url="http://h/1.png", index=0, task_id="t")
    assert img.path == tmp_path / "s" / f"{hashlib.sha256(data).hexdigest()}.png"
    assert (img.width, img.height, img.mime, img.size) == (8, 6, "image/png", len(data))
    assert img.data == data and img._repr_png_() == data and img._repr_jpeg_() is None
    assert store.verify(img)
    img.path.write_bytes(data[:-1] + b"\x00")
    assert not store.verify(img)
    again = store.put(data)  # a damaged file is rewritten, even at the same size
    assert again.path == img.path and store.verify(img) and img.path.read_bytes() == data
    os.remove(img.path)
    assert not store.verify(img)
    assert type(img).from_dict(img.to_dict()).sha256 == img.sha256


def test_store_rejects_non_images_and_truncated_images(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(E.DownloadError, match="not a PNG"):
        store.put(b"<html>nope</html>", task_id="t1")
    with pytest.raises(E.DownloadError, match="truncated") as info:
        store.put(png_bytes()[:-20], task_id="t1")
    assert info.value.task_id == "t1"
    assert list(tmp_path.iterdir()) == []


def test_store_jpeg_and_sniffing(tmp_path):
    out = io.BytesIO()
    Image.new("RGB", (10, 4)).save(out, format="JPEG")
    img = ImageStore(tmp_path).put(out.getvalue())
    assert img.mime == "image/jpeg" and (img.width, img.height) == (10, 4) and img.path.suffix == ".jpg"
    assert sniff(b"GIF89a...") is None


def test_store_refuses_paths_that_are_not_digests(tmp_path):
    store = ImageStore(tmp_path)
    for bad in ("../../etc/passwd", "0" * 63, "g" * 64):
        with pytest.raises(ValueError):
            store.path_for(bad, "image/png")
