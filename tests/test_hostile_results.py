"""Hostile or broken results, each ending with a clear error naming the task (or a noted, bounded success),
with the kernel's memory bounded: a PNG declaring 144 megapixels, JPEG bytes served as image/png, an answer
over the size cap, status answers and downloads that trickle one byte a second, more result URLs than images
asked for. And 500s: a validation-like 500 is not retried, and the poller stops after 500s in a row.

The client runs in a child process (the simulator in this one, so its own buffers are not counted) and reports
its peak memory: `tracemalloc`'s peak of Python allocations and the growth of `ru_maxrss`, which also counts
Pillow's C buffers: previewing the complete 12000x12000 bomb below without the header check grows the process
by ~1.1 GB. (The simulator's huge_png is truncated after one row, so a decode of it would fail before touching
most of its buffer: for it, the test is that it is refused and never stored.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KEY
from reliability_util import seen

from imagen4_jupyter import GenerationRequest, PollSchedule, RetryPolicy
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.store import MAX_PIXELS, ImageStore, preview, thumbnail
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator.images import huge_png

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

CHILD = r"""
import json, resource, sys, time, tracemalloc
from pathlib import Path
import PIL.Image, requests  # loaded before the baseline: only what the job costs is measured
from imagen4_jupyter import GenerationRequest, Imagen4Client, PollSchedule, RetryPolicy
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.api.store import preview, thumbnail
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

a = json.loads(sys.argv[1])
client = Imagen4Client(a["key"], a["url"], schedule=PollSchedule.fixed(0.02, max_wait=a["max_wait"]),
                       retry=RetryPolicy(attempts=3, base=0.01, cap=0.05), cache_dir=a["cache"],
                       limits=Limits.off(), timeout=(2.0, 5.0), **a["client"])
session = Session(client=client, history=History(a["history"]))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.monotonic()
out = {}
if a.get("file"):
    try:
        preview(Path(a["file"]).read_bytes(), 768)
        thumbnail(a["file"])
        out["error"] = None
    except Exception as exc:
        out.update(error=type(exc).__name__, message=str(exc))
else:
    job = session.submit(GenerationRequest.create(a["prompt"], num_images=a["num_images"]))
    err = job.exception(a["max_wait"] + 10)
    for im in job.images:  # what the display does with a stored image
        preview(im.data, 768)
        thumbnail(im.path)
    out.update(task_id=job.task_id, error=type(err).__name__ if err else None, message=str(err) if err else None,
               retryable=getattr(err, "retryable", None), final=getattr(err, "final", None),
               images=[{"mime": im.mime, "path": str(im.path), "width": im.width} for im in job.images],
               extra_urls=job.extra_urls)
out["seconds"] = time.monotonic() - t0
out["traced_peak"] = tracemalloc.get_traced_memory()[1]
out["rss_growth"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024  # KB on Linux
session.close()
print("RESULT " + json.dumps(out))
"""


def run_child(sim, tmp_path, *, prompt="hostile", num_images=1, max_wait=10.0, client=None, file=None) -> dict:
    args = dict(url=sim.url, key=KEY, cache=str(tmp_path / "cache"), history=str(tmp_path / ".imagen4" / "h.jsonl"),
                prompt=prompt, num_images=num_images, max_wait=max_wait, client=client or {},
                file=str(file) if file else None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                          timeout=max_wait + 40, env=env, cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    seen(out.get("message"))
    return out


def bounded(out: dict, rss: int = 40 * MB, traced: int = 16 * MB) -> None:
    assert out["rss_growth"] < rss, f"the process grew by {out['rss_growth'] / MB:.0f} MB"
    assert out["traced_peak"] < traced, f"Python allocations peaked at {out['traced_peak'] / MB:.0f} MB"


class NoService:
    url = "http://127.0.0.1:9"  # the child reads a file and sends nothing


NO_SERVICE = NoService()


def test_a_png_declaring_144_megapixels_is_refused_before_decoding(sim, tmp_path):
    sim.inject("image", times=None, huge_png=True)  # 12000x12000 in a few hundred bytes
    out = run_child(sim, tmp_path)
    assert out["error"] == "DownloadError" and out["task_id"] in out["message"]
    assert "12000x12000" in out["message"] and "64-megapixel limit" in out["message"]
    assert out["retryable"] is False and out["final"] is True  # the same bytes again would be refused again
    assert not list((tmp_path / "cache").glob("*.png"))  # never stored, so nothing can decode it later
    bounded(out)


def complete_bomb(path: Path, width: int = 12000, height: int = 12000) -> Path:
    """A valid, complete PNG of width x height black RGB pixels: ~430 MB decoded from a few MB (the
    simulator's huge_png is truncated, so decoding it fails early; this one would really be decoded)."""
    import struct
    import zlib

    from imagen4_jupyter.simulator.images import PNG_SIGNATURE, chunk

    packer, row, parts = zlib.compressobj(1), b"\x00" * (1 + 3 * width), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def test_previews_and_thumbnails_refuse_a_huge_file_without_decoding_it(tmp_path):
    path = complete_bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 4 * MB
    with pytest.raises(E.DownloadError, match="megapixels"):
        preview(path.read_bytes())
    with pytest.raises(E.DownloadError, match="megapixels"):
        thumbnail(path)
    out = run_child(NO_SERVICE, tmp_path, file=path)
    assert out["error"] == "DownloadError" and "144 megapixels" in out["message"]
    bounded(out)


def test_the_limit_is_64_megapixels(tmp_path):
    store = ImageStore(tmp_path)
    assert MAX_PIXELS == 64_000_000
    with pytest.raises(E.DownloadError, match="8001x8000"):
        store.put(huge_png(8001, 8000), task_id="task_x")
    stored = store.put(huge_png(8000, 8000), task_id="task_x")  # at the limit: stored (its header is read only)
    assert (stored.width, stored.height) == (8000, 8000)


def test_jpeg_bytes_served_as_png_are_stored_as_what_they_are(sim, tmp_path):
    sim.inject("image", mislabeled=True)
    out = run_child(sim, tmp_path)
    assert out["error"] is None
    [image] = out["images"]
    assert image["mime"] == "image/jpeg" and image["path"].endswith(".jpg")  # judged by the bytes
    bounded(out)


def test_an_answer_over_the_size_cap_is_refused_without_reading_it(sim, tmp_path):
    sim.inject("image", times=None, oversize=80 * MB)
    out = run_child(sim, tmp_path, client=dict(max_download_bytes=50 * MB))
    assert out["error"] == "DownloadError" and "larger than the 50 MB cap" in out["message"]
    assert out["task_id"] in out["message"] and out["retryable"] is False
    bounded(out)


def test_a_status_answer_that_never_ends_is_bounded_by_the_request_deadline(sim, tmp_path):
    sim.inject("recordInfo", times=None, trickle=True)  # one byte a second, forever
    out = run_child(sim, tmp_path, max_wait=2.5, client=dict(request_deadline=1.0))
    assert out["error"] == "TransportError" and out["task_id"] in out["message"]
    assert "still arriving after 1 s (request_deadline)" in out["message"]
    assert out["seconds"] < 2.5 + 1.0 + 2.0  # the overall limit, plus at most one deadline and a read
    bounded(out)


def test_a_trickling_status_answer_once_is_recovered_from(sim, tmp_path):
    sim.inject("recordInfo", times=1, trickle=0.5)
    out = run_child(sim, tmp_path, client=dict(request_deadline=0.8))
    assert out["error"] is None and len(out["images"]) == 1 and out["seconds"] < 5
    bounded(out)


def test_a_trickling_image_is_abandoned_at_the_download_deadline_and_retried(sim, tmp_path):
    sim.inject("image", times=1, trickle=True)
    out = run_child(sim, tmp_path, client=dict(download_deadline=1.0))
    assert out["error"] is None and len(out["images"]) == 1 and out["seconds"] < 5
    bounded(out)


def test_a_trickling_image_forever_ends_with_a_clear_error(sim, tmp_path):
    sim.inject("image", times=None, trickle=True)
    out = run_child(sim, tmp_path, max_wait=2.0, client=dict(download_deadline=0.7))
    assert out["error"] == "DownloadError" and "longer than 0.7 s (download_deadline)" in out["message"]
    assert out["task_id"] in out["message"] and out["seconds"] < 6
    bounded(out)


def test_a_trickling_create_task_is_outcome_unknown_not_resent(sim, make_client):
    client = make_client(request_deadline=0.8)
    sim.inject("createTask", trickle=True)
    t0 = time.monotonic()
    with pytest.raises(E.OutcomeUnknownError, match="request_deadline") as info:
        client.submit("slow create")
    assert time.monotonic() - t0 < 3 and "NOT resent" in str(info.value)
    assert sim.count("createTask") == 1


def test_more_result_urls_than_asked_for_take_the_ones_asked_for(sim, tmp_path):
    sim.next_outcomes.append({"extra_urls": 3})
    out = run_child(sim, tmp_path, num_images=2)
    assert out["error"] is None and len(out["images"]) == 2 and len(out["extra_urls"]) == 3
    assert sim.count("image") == 2  # the extra ones are never downloaded
    events = [json.loads(line) for line in (tmp_path / ".imagen4" / "h.jsonl").read_text().splitlines()]
    [done] = [e for e in events if e.get("event") == "succeeded"]
    assert done["extra_urls"] == out["extra_urls"] and len(done["images"]) == 2
    bounded(out)


# -- 500s ------------------------------------------------------------------------------------------------
def test_create_task_500_with_a_validation_message_is_not_retried(sim, client):
    sim.inject("createTask", times=None, code=500, msg="This field is required")
    with pytest.raises(E.ServerError) as info:
        client.submit("x")
    err = info.value
    assert "validation error" in str(err) and "This field is required" in str(err) and not err.retryable
    assert sim.count("createTask") == 1


def test_the_quirk_500_on_a_missing_field_is_not_retried(sim, client):
    """The simulator's own quirk: a body without `input.prompt` answers 500 "This field is required"."""
    sim.quirk_500_on_missing_field = True
    request = GenerationRequest.create("x")
    payload = request.to_payload()
    del payload["input"]["prompt"]
    import requests

    resp = requests.post(sim.url + "/api/v1/jobs/createTask", json=payload,
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert resp.json() == {"code": 500, "msg": "This field is required", "data": None}
    task_id = client.create_task(request)  # a whole request is accepted
    sim.inject("recordInfo", times=None, code=500, msg="This field is required")
    with pytest.raises(E.ServerError, match="not retried"):
        client.get_task(task_id)
    assert sim.count("recordInfo") == 1


def session_with(make_client, tmp_path, max_wait: float = 20.0) -> Session:
    client = make_client(schedule=PollSchedule.fixed(0.02, max_wait=max_wait),
                         retry=RetryPolicy(attempts=3, base=0.01, cap=0.02))
    return Session(client=client, history=History(tmp_path / ".imagen4" / "five.jsonl"))


def test_the_poller_stops_after_five_500s_in_a_row(sim, make_client, tmp_path):
    session = session_with(make_client, tmp_path)
    job = session.submit(GenerationRequest.create("five hundred"))
    fault = sim.inject("recordInfo", times=None, code=500)
    t0 = time.monotonic()
    err = job.exception(15)
    seen(err)
    assert time.monotonic() - t0 < 5  # long before the 20 s overall limit
    assert type(err) is E.ServerError and "answered 500 5 times in a row" in str(err) and job.task_id in str(err)
    assert "%imagen4 resume" in str(err) and not err.final
    assert fault.hits == 5
    deadline = time.monotonic() + 5
    while session.history.get(job.task_id).error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not session.history.get(job.task_id).finished  # resumable: the task may still be fine
    sim.clear_faults()
    [again] = session.resume()
    assert len(again.result(10).images) == 1
    session.close()


def test_500s_with_good_answers_between_them_are_retried_until_done(sim, make_client, tmp_path):
    session = session_with(make_client, tmp_path)
    sim.next_outcomes.append({"generation_time": 0.6})
    job = session.submit(GenerationRequest.create("flaky"))
    for _ in range(4):  # 4 x (four 500s, then a good answer): 16 in all, never five in a row
        sim.inject("recordInfo", times=4, code=500)
        sim.inject("recordInfo", times=1, delay=0.001)
    assert len(job.result(15).images) == 1
    session.close()


def test_image_500s_in_a_row_end_the_job_too(sim, make_client, tmp_path):
    session = session_with(make_client, tmp_path)
    sim.inject("image", times=None, http_status=500)
    job = session.submit(GenerationRequest.create("image 500"))
    err = job.exception(15)
    assert type(err) is E.DownloadError and "500 5 times in a row to this task's image download" in str(err)
    assert sim.count("image") == 5 and not err.final
    session.close()


def test_502s_are_still_retried_until_the_overall_limit(sim, make_client, tmp_path):
    session = session_with(make_client, tmp_path, max_wait=1.0)
    job = session.submit(GenerationRequest.create("gateway"))
    sim.inject("recordInfo", times=None, http_status=502)
    err = job.exception(10)
    assert type(err) is E.ServerError and "non-JSON error page" in str(err)
    assert sim.count("recordInfo") > 5
    session.close()
