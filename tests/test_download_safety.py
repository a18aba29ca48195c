"""Downloads against a hostile service: files land only as `<sha256>.<ext>` inside the cache folder, odd
URLs fail fast and clearly, and a hostile history line cannot make the display read an arbitrary file.

(The size cap and the content-type check at the session level are cases of test_fault_matrix.py.)
"""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
from reliability_util import seen
from test_magics import ip, run  # noqa: F401 - `ip` is a fixture

from imagen4_jupyter import GenerationRequest, PollSchedule
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

SHA_FILE = re.compile(r"[0-9a-f]{64}\.(png|jpg|webp)")


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def session(make_client, tmp_path):
    s = Session(client=make_client(schedule=PollSchedule.fixed(0.02, max_wait=20)),
                history=History(tmp_path / ".imagen4" / "d.jsonl"))
    yield s
    s.close()


def test_hostile_result_urls_land_only_as_sha_named_files_in_the_cache(sim, session, tmp_path):
    first = session.submit(GenerationRequest.create("first", seed="1")).wait(10)
    url = first.result_urls[0]
    base, rest = url.split("/files/")
    token, name = rest.split("/")
    cache = session.client.store.root
    before = files_under(tmp_path)
    hostile = [
        f"{base}/files/{token}/../{token}/{name}",  # dot segments: resolved by the client before sending
        f"{base}/files/../../../../etc/../files/{token}/{name}",
        f"{url}?name=../../../../evil.png&path=/etc/passwd",
        f"{url}#../../evil.sh",
        f"{base}/files/{token}/{name};../../evil.png",
        f"{base}/files/{token}/%2e%2e%2f%2e%2e%2fevil.png",  # encoded: the service answers 404
    ]
    results = []
    for u in hostile:
        sim.next_outcomes.append({"result_json": json.dumps({"resultUrls": [u]})})
        job = session.submit(GenerationRequest.create(f"hostile {u[-30:]}"))
        err = job.exception(10)
        seen(err, job)
        results.append((u, job, err))
    ok = [j for _, j, e in results if e is None]
    assert len(ok) >= 4  # the URLs that reach the real file are downloaded normally
    for u, job, err in results:
        if err is not None:
            assert isinstance(err, E.DownloadError) and job.task_id in str(err), (u, err)
            continue
        for im in job.images:
            assert Path(im.path).parent == cache and SHA_FILE.fullmatch(Path(im.path).name)
            assert Path(im.path).name == f"{im.sha256}.png"
    new = files_under(tmp_path) - before
    for path in new:  # nothing outside the cache but the history itself (and its index)
        in_cache = path.is_relative_to(cache) and re.match(r"[0-9a-f]{64}", path.name)  # images, thumbnails
        assert in_cache or path.parent == tmp_path / ".imagen4", path
    assert not (tmp_path.parent / "evil.png").exists() and not list(tmp_path.rglob("evil*"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "ftp://127.0.0.1/x.png",
                                 "data:image/png;base64,iVBORw0KGgo="])
def test_non_http_result_urls_fail_at_once_and_for_good(sim, session, url):
    sim.next_outcomes.append({"result_json": json.dumps({"resultUrls": [url]})})
    job = session.submit(GenerationRequest.create("odd url"))
    t0 = time.monotonic()
    err = job.exception(10)
    assert job.done() and time.monotonic() - t0 < 2  # not retried until the overall limit
    assert isinstance(err, E.DownloadError) and "non-http(s) URL" in str(err) and job.task_id in str(err)
    assert not err.retryable
    deadline = time.monotonic() + 5
    while session.history.get(job.task_id).error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.history.get(job.task_id).finished  # final: resume leaves it alone
    assert sim.count("image") == 0


def test_image_redirect_to_a_file_url_is_not_followed_and_fails_at_once(sim, session):
    sim.inject("image", times=None, redirect="file:///etc/passwd")
    job = session.submit(GenerationRequest.create("redirected"))
    t0 = time.monotonic()
    err = job.exception(10)
    assert job.done() and time.monotonic() - t0 < 2
    assert isinstance(err, E.DownloadError) and job.task_id in str(err) and not err.retryable
    assert sim.count("image") == 1


def test_svg_content_type_is_judged_by_the_bytes(sim, session):
    sim.inject("image", content_type="image/svg+xml")
    res = session.submit(GenerationRequest.create("typed")).wait(10)
    [im] = res.images
    assert im.mime == "image/png" and Path(im.path).name == f"{im.sha256}.png"


def test_hostile_history_line_cannot_make_a_cell_embed_an_arbitrary_file(ip, sim, tmp_path):  # noqa: F811
    """A history copied from someone else points a seeded request's "image" at a private file."""
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- hostile-history-secret")
    hist = ip.imagen4.session.history
    for seed, path in ((1, str(secret)), (2, "../id_rsa")):
        req = GenerationRequest.create("a fox", seed=seed)
        tid = f"task_evil{seed}"
        hist.append({"event": "submitted", "task_id": tid, "request": req.to_dict(), "request_key": req.key()})
        hist.append({"event": "succeeded", "task_id": tid, "urls": ["http://127.0.0.1:9/1.png"],
                     "images": [{"path": path, "sha256": "0" * 64, "mime": "image/png", "width": 1, "height": 1,
                                 "size": 10, "url": "http://127.0.0.1:9/1.png", "index": 0}]})
        assert hist.find_reusable(req) is None
        r = run(ip, f"%%imagen4 --wait --embed full -s {seed}\na fox", f"%imagen4 show {tid}", "%imagen4 history")
        assert r.result.error_in_exec is None, r.text
        blob = json.dumps([o["data"] for o in r.outputs])
        assert b"hostile-history-secret" not in b"".join(
            base64.b64decode(v) for o in r.outputs for k, v in o["data"].items() if k.startswith("image/"))
        assert base64.b64encode(secret.read_bytes()).decode()[:40] not in blob
        assert "hostile-history-secret" not in blob
    assert sim.count("createTask") == 2  # not reused: a real task each time


def test_history_table_thumbnails_only_read_content_addressed_files(ip, sim, tmp_path):  # noqa: F811
    """A private *image* named by a hostile history line is not embedded as a thumbnail either."""
    from PIL import Image

    private = tmp_path / "private-screenshot.png"
    Image.new("RGB", (64, 64), (250, 10, 200)).save(private)
    hist = ip.imagen4.session.history
    req = GenerationRequest.create("a private picture", seed=3)
    hist.append({"event": "submitted", "task_id": "task_evil_png", "request": req.to_dict(), "request_key": req.key()})
    hist.append({"event": "succeeded", "task_id": "task_evil_png", "urls": ["http://127.0.0.1:9/1.png"],
                 "images": [{"path": str(private), "sha256": "1" * 64, "mime": "image/png", "width": 64,
                             "height": 64, "size": private.stat().st_size, "url": "http://127.0.0.1:9/1.png"}]})
    r = run(ip, "%imagen4 history")
    html = "".join(o["data"].get("text/html", "") for o in r.outputs)
    assert "task_evil_png" in html and "<img" not in html


def test_saving_an_image_writes_its_provenance_and_leaves_the_store_unchanged(sim, session, tmp_path):
    import hashlib

    from imagen4_jupyter import read_provenance

    request = GenerationRequest.create("saved with provenance", seed="7", model="fast")
    res = session.submit(request).wait(10)
    [im] = res.images
    before = hashlib.sha256(Path(im.path).read_bytes()).hexdigest()
    out = im.save(tmp_path / "exports" / "lighthouse.png", simulated=True)
    info = read_provenance(out)
    assert info == {"task_id": res.task_id, "model": "google/imagen4-fast", "request": request.to_dict(),
                    "sha256": im.sha256, "simulated": True}
    assert hashlib.sha256(Path(im.path).read_bytes()).hexdigest() == before == im.sha256  # the service's bytes
    assert out.read_bytes() != Path(im.path).read_bytes()
    from PIL import Image

    with Image.open(out) as a, Image.open(im.path) as b:
        assert a.tobytes() == b.tobytes()  # pixels untouched
    # an image rebuilt from the history knows nothing of its task: the caller says
    entry = session.history.get(res.task_id)
    [old] = session.history.stored_images(entry)
    again = read_provenance(old.save(tmp_path / "old.png", task_id=res.task_id, request=request))
    assert again["task_id"] == res.task_id and again["request"]["prompt"] == "saved with provenance"
    assert again["model"] == "google/imagen4-fast" and "simulated" not in again
    assert read_provenance(im.path) is None  # the store's copy carries nothing
