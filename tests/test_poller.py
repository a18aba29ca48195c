"""The background poller: schedule, retries, timeouts, callbacks, and 200 tasks through one client."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from conftest import FAST_RETRY, KEY

from imagen4_jupyter import Imagen4Client, NotFoundError, PollSchedule
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.job import Job


def test_default_schedule_follows_the_providers_advice():
    s = PollSchedule()
    job = Job("task_x", None, created_at=1000.0)
    assert 2 <= s.next_delay(job, 1000.0) <= 3 and 2 <= s.next_delay(job, 1029.0) <= 3
    assert 5 <= s.next_delay(job, 1031.0) <= 10 and 5 <= s.next_delay(job, 1119.0) <= 10
    assert 15 <= s.next_delay(job, 1121.0) <= 30 and 15 <= s.next_delay(job, 1800.0) <= 30
    assert s.max_wait == 900.0
    fast = s.scaled(0.01)
    assert math.isclose(fast.next_delay(job, 1000.0), 0.025) and math.isclose(fast.max_wait, 9.0)
    assert PollSchedule.fixed(0.5, max_wait=3).next_delay(job, 5000.0) == 0.5


def test_polls_at_the_configured_interval(sim, make_client):
    client = make_client(schedule=PollSchedule.fixed(0.1, max_wait=10))
    sim.next_outcomes.append({"queue_time": 0.0, "generation_time": 0.45})
    client.submit("x").wait(10)
    times = [r.time for r in sim.requests if r.endpoint == "recordInfo"]
    assert 3 <= len(times) <= 7
    assert all(b - a >= 0.09 for a, b in zip(times, times[1:], strict=False))


def test_poller_retries_status_check_failures_and_still_succeeds(sim, client):
    sim.inject("recordInfo", times=2, code=500)
    sim.inject("recordInfo", times=1, http_status=502)
    sim.inject("recordInfo", times=1, drop=True)
    res = client.submit("x").wait(10)
    assert len(res.images) == 1 and sim.count("recordInfo") >= 5


def test_poller_retries_until_the_overall_limit_then_reports_the_error(sim, make_client):
    client = make_client(schedule=PollSchedule.fixed(0.02, max_wait=0.6))
    sim.inject("recordInfo", times=None, code=455)
    job = client.submit("x")
    t0 = time.monotonic()
    err = job.exception(10)
    assert 0.3 < time.monotonic() - t0 < 2.0
    assert isinstance(err, E.MaintenanceError) and err.task_id == job.task_id
    assert "Try again later" in str(err) and job.status == "error"
    assert sim.count("recordInfo") > FAST_RETRY.attempts  # more patient than a single call


def test_poller_survives_an_outage_longer_than_one_calls_retries(sim, client):
    sim.inject("recordInfo", times=FAST_RETRY.attempts * 2, code=455)
    res = client.submit("x").wait(10)
    assert len(res.images) == 1


def test_callbacks_fire_once_and_late_callbacks_run_at_once(sim, client):
    done: list[str] = []
    changes: list[str] = []
    job = client.submit("x")
    job.add_done_callback(lambda j: done.append(j.status))
    job.on_change(lambda j: changes.append(j.status))
    job.on_change(lambda j: 1 / 0)  # a broken callback must not stop the poller
    job.wait(10)
    time.sleep(0.05)
    assert done == ["success"] and changes[-1] == "success"
    late: list[str] = []
    job.add_done_callback(lambda j: late.append(j.task_id))
    assert late == [job.task_id]


def test_close_ends_jobs_still_running(sim, make_client):
    client = make_client()
    sim.next_outcomes.append({"generation_time": 30.0})
    job = client.submit("x")
    client.close()
    with pytest.raises(E.TimeoutError, match="closed.*client.track") as info:
        job.wait(2)
    assert info.value.task_id == job.task_id


def test_poke_checks_at_once(sim, make_client):
    client = make_client(schedule=PollSchedule.fixed(30.0, max_wait=60))
    job = client.submit("x")
    time.sleep(0.2)  # finished on the service, but the next check is 30 s away
    assert not job.done()
    client.poller.poke(job.task_id)
    assert job.wait(5).task_id == job.task_id


# -- many tasks through one client ---------------------------------------------------------------

@pytest.fixture
def external_sim():
    """The simulator in its own process, so thread counts here are the client's alone."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagen4_jupyter.simulator", "--port", "0", "--key", KEY,
         "--queue-time", "0", "0.05", "--generation-time", "0.02", "0.1", "--image-scale", "0.03125",
         "--no-limits", "--cost-per-image", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, f"simulator did not start: {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_200_tasks_through_one_client_with_bounded_threads(external_sim, tmp_path):
    baseline = threading.active_count()
    client = Imagen4Client(api_key=KEY, base_url=external_sim, schedule=PollSchedule.fixed(0.05, max_wait=60),
                           retry=FAST_RETRY, cache_dir=tmp_path / "cache", timeout=(2.0, 10.0))
    try:
        before = client.credits()
        jobs = [client.submit(f"scene number {i}", seed=i, aspect_ratio=("1:1", "16:9", "3:4")[i % 3])
                for i in range(200)]
        peak = threading.active_count()
        deadline = time.monotonic() + 45
        while not all(j.done() for j in jobs) and time.monotonic() < deadline:
            peak = max(peak, threading.active_count())
            time.sleep(0.005)
        results = [j.wait(0) for j in jobs]
        assert len({r.task_id for r in results}) == 200
        assert all(len(r.images) == 1 and r.images[0].data.startswith(b"\x89PNG") for r in results)
        assert len({r.images[0].sha256 for r in results}) == 200
        assert peak - baseline <= 8, f"{peak - baseline} extra threads"  # poller + 3 workers, 4 sender threads
        assert len(client.poller.active) == 0
        assert client.credits() == before - 200 * 4  # exactly 200 tasks were created (4 credits each)
    finally:
        client.close()


def test_a_failing_on_created_hook_does_not_lose_the_paid_task(sim, client):
    from imagen4_jupyter import GenerationRequest

    seen: list[Job] = []

    def hook(job):
        seen.append(job)
        raise OSError("disk full")

    job = client.submit_request(GenerationRequest.create("x"), on_created=hook, queue=False)  # the hook failed
    assert seen == [job] and job.task_id is not None
    assert len(job.wait(10).images) == 1  # followed all the same
    assert sim.count("createTask") == 1


def test_the_poller_needs_only_the_poll_target_interface(sim, client):
    """The poller knows no Imagen4Client: anything with a schedule, a backoff, a store, a query slot, one status
    fetch and a download will do (here every request still goes to the simulator, through a real client)."""
    from imagen4_jupyter.api.poller import Poller, PollTarget
    from imagen4_jupyter.api.request import GenerationRequest

    class Target:
        def __init__(self) -> None:
            self.schedule, self.retry, self.store = client.schedule, client.retry, client.store
            self.fetched: list[str] = []
            self.downloaded: list[str] = []

        def get_task_once(self, task_id: str):
            self.fetched.append(task_id)
            return client.get_task_once(task_id)

        def query_slot(self) -> float:
            return client.query_slot()

        def download(self, url: str, *, task_id: str | None = None) -> bytes:
            self.downloaded.append(url)
            return client.download(url, task_id=task_id)

    target: PollTarget = Target()
    poller = Poller(target)
    job = Job(client.create_task(GenerationRequest.create("x", num_images=2)), None)
    poller.track(job)
    try:
        result = job.result(10)
    finally:
        poller.stop()
    assert set(target.fetched) == {job.task_id} and target.downloaded == result.result_urls
    assert len(result.images) == 2 and all(im.path.parent == client.store.root for im in result.images)
    assert not client.poller.active  # the client's own poller never saw the job


def test_one_html_404_page_on_a_status_check_does_not_end_a_paid_task(sim, client):
    """A proxy's 404 page is not the service's word on the task: asked again, the task finishes (the soak found
    this ending healthy tasks for good)."""
    job = client.submit("a lighthouse")
    sim.inject("recordInfo", times=1, html=True, http_status=404)
    assert len(job.result(20).images) == 1
    sim.inject("recordInfo", times=None, html=True, http_status=404)  # every answer: it fails, but not for good
    stuck = client.submit("a harbour")
    with pytest.raises(NotFoundError) as info:
        stuck.result(20)
    assert info.value.final is False and "APIKLEY_BASE_URL" in str(info.value)
