"""Expired result URLs (apikley.md section 8): a 403/404/410 image URL is downloaded again from a fresh link of
`POST /api/v1/common/download-url`; when there is none (no endpoint, media no longer retained, a URL the service
did not make, a fresh link expired too) a final DownloadError names the task and says the service no longer
serves these images. Against the simulator's clocks (`url_ttl`, `link_ttl`, `retention`)."""
from __future__ import annotations

import json
import time

import pytest
from conftest import KEY
from reliability_util import seen

from imagen4_jupyter import GenerationRequest, PollSchedule
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session


def link_requests(sim):
    return [r for r in sim.requests if r.endpoint == "downloadUrl"]


@pytest.mark.parametrize("status", [403, 404, 410])
def test_an_expired_result_url_is_downloaded_from_a_fresh_link(sim, client, status):
    sim.url_ttl = 0.0  # the result URLs have expired by the time anyone downloads them
    sim.expired_status = status
    job = client.submit("a lighthouse", seed="1")
    result = job.result(10)
    [image] = result.images
    assert image.width > 0 and image.data.startswith(b"\x89PNG")
    [asked] = link_requests(sim)
    assert json.loads(asked.body) == {"url": result.result_urls[0]}  # the original result URL
    assert asked.headers.get("Authorization") == f"Bearer {KEY}"  # like the other endpoints
    images = [r for r in sim.requests if r.endpoint == "image"]
    assert [r.path.split("/")[1] for r in images] == ["files", "dl"]  # the expired URL, then the fresh link
    assert all("Authorization" not in r.headers for r in images)


def test_a_fresh_link_is_not_asked_for_while_the_result_url_works(sim, client):
    client.generate("fresh", timeout=10)
    assert link_requests(sim) == []


def history_session(make_client, tmp_path, **kw) -> Session:
    return Session(client=make_client(**kw), history=History(tmp_path / ".imagen4" / "links.jsonl"))


def test_resume_long_after_downloads_from_fresh_links(sim, make_client, tmp_path):
    """A kernel restart while the task ran; resumed after the result URLs expired: no new task, fresh links."""
    first = history_session(make_client, tmp_path)
    sim.next_outcomes.append({"generation_time": 0.4, "queue_time": 0.0})
    job = first.submit(GenerationRequest.create("resumed later", num_images=2), queue=False)
    first.close()  # the job ends unfinished; the history keeps it for resume
    assert isinstance(job.exception(5), E.Imagen4TimeoutError)
    time.sleep(0.5)
    sim.url_ttl = 0.0
    later = history_session(make_client, tmp_path)
    [resumed] = later.resume()
    result = resumed.result(10)
    assert len(result.images) == 2 and len(link_requests(sim)) == 2
    assert sim.count("createTask") == 1
    deadline = time.monotonic() + 5
    while not later.history.get(job.task_id).succeeded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert later.history.get(job.task_id).succeeded
    later.close()


def final_failure(sim, make_client, tmp_path, prompt: str) -> tuple[E.DownloadError, Session, str]:
    session = history_session(make_client, tmp_path, schedule=PollSchedule.fixed(0.02, max_wait=10))
    job = session.submit(GenerationRequest.create(prompt))
    t0 = time.monotonic()
    err = job.exception(10)
    seen(err, job)
    assert time.monotonic() - t0 < 3  # not retried until the overall limit
    assert isinstance(err, E.DownloadError) and not err.retryable and err.final
    assert job.task_id in str(err) and "no longer serves these images" in str(err)
    deadline = time.monotonic() + 5
    while session.history.get(job.task_id).error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.history.get(job.task_id).finished and session.resume() == []  # final: resume leaves it
    return err, session, job.task_id


def test_media_no_longer_retained_is_said_plainly(sim, make_client, tmp_path):
    sim.url_ttl = sim.retention = 0.0
    err, session, _ = final_failure(sim, make_client, tmp_path, "too old")
    assert "no longer retained" in str(err) and "14 days" in str(err)
    assert len(link_requests(sim)) == 1
    session.close()


def test_a_service_without_download_url_is_said_plainly(sim, make_client, tmp_path):
    sim.url_ttl = 0.0
    sim.download_url_enabled = False
    sim.expired_status = 410
    err, session, _ = final_failure(sim, make_client, tmp_path, "reseller")
    assert "answered 410 (expired)" in str(err) and "offers no fresh links" in str(err)
    session.close()


def test_a_url_the_service_did_not_make_is_refused_a_fresh_link(sim, make_client, tmp_path):
    sim.next_outcomes.append({"result_urls": [f"{sim.url}/files/nobodys-token/1.png"]})
    err, session, _ = final_failure(sim, make_client, tmp_path, "foreign url")
    assert "refused a fresh link (422" in str(err)
    session.close()


def test_a_fresh_link_that_expired_too_is_final(sim, make_client, tmp_path):
    sim.url_ttl = 0.0
    sim.link_ttl = 0.0  # the fresh link is dead on arrival
    err, session, _ = final_failure(sim, make_client, tmp_path, "short links")
    assert "a fresh link from download-url answered 404 too" in str(err)
    assert [r.path.split("/")[1] for r in sim.requests if r.endpoint == "image"] == ["files", "dl"]
    session.close()


def test_a_transient_download_url_failure_is_retried(sim, make_client):
    client = make_client()
    sim.url_ttl = 0.0
    sim.inject("downloadUrl", times=2, code=500)
    result = client.generate("busy links", timeout=10)
    assert len(result.images) == 1 and len(link_requests(sim)) == 3


def test_show_reads_the_stored_images_of_a_task_finished_long_ago(sim, make_client, tmp_path):
    """`%imagen4 show` of an old task reads the store (job_from_history); nothing is downloaded again."""
    session = history_session(make_client, tmp_path)
    job = session.submit(GenerationRequest.create("old task", seed="4"))
    job.result(10)
    deadline = time.monotonic() + 5
    while not session.history.get(job.task_id).succeeded and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.url_ttl = sim.retention = 0.0
    before = sim.count()
    shown = session.job_from_history(session.history.get(job.task_id))
    assert shown.done() and [im.sha256 for im in shown.images] == [im.sha256 for im in job.images]
    assert shown.images[0].data.startswith(b"\x89PNG") and sim.count() == before
    session.close()
