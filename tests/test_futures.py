"""`Job` is a `concurrent.futures.Future`: wait / as_completed / asyncio.gather over real tasks of the simulator,
exception(timeout), cancel(), and the guarantee that a job is done only after its change callbacks (the
history's final event, the display) ran. One real kernel checks `await job` under IPython's top-level await."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import threading
import time

import pytest
from conftest import KEY
from kernel_util import Kernel, kernel_env

from imagen4_jupyter import Imagen4TimeoutError, Job, Result
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session


def test_a_job_is_a_future_and_concurrent_futures_wait_waits_for_all(sim, client):
    jobs = [client.submit(f"prompt {i}") for i in range(4)]
    assert all(isinstance(j, cf.Future) for j in jobs)
    done, not_done = cf.wait(jobs, timeout=20)
    assert not not_done and done == set(jobs)
    results = [j.result(0) for j in jobs]
    assert all(isinstance(r, Result) and r.images and r.task_id == j.task_id for r, j in zip(results, jobs,
                                                                                             strict=True))
    assert all(j.status == "success" and j.finished and j.exception(0) is None for j in jobs)


def test_as_completed_yields_every_job_once_in_completion_order(sim, client):
    sim.next_outcomes.append({"generation_time": 0.6})  # the first submitted finishes last
    slow = client.submit("slow")
    quick = [client.submit(f"quick {i}") for i in range(3)]
    order = [j for j in cf.as_completed([slow, *quick], timeout=20)]
    assert sorted(j.task_id for j in order) == sorted(j.task_id for j in [slow, *quick])
    assert order[-1] is slow
    assert all(j.done() and j.result(0).images for j in order)


def test_asyncio_gather_awaits_jobs_without_blocking_the_loop(sim, client):
    sim.next_outcomes.append({"generation_time": 0.3})
    jobs = [client.submit(f"async {i}") for i in range(3)]
    ticks = []

    async def ticker() -> None:
        while not all(j.done() for j in jobs):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def main() -> list[Result]:
        results, _ = await asyncio.gather(asyncio.gather(*jobs), ticker())
        return results

    results = asyncio.run(main())
    assert [r.task_id for r in results] == [j.task_id for j in jobs]
    assert all(isinstance(r, Result) and r.images for r in results)
    assert len(ticks) >= 5  # the loop kept running while the jobs were awaited


def test_awaiting_a_failed_job_raises_its_error(sim, client):
    sim.next_outcomes.append({"fail": ("400", "filtered")})
    job = client.submit("a filtered prompt")

    async def main() -> Result:
        return await job

    with pytest.raises(E.GenerationFailedError, match="filtered"):
        asyncio.run(main())
    assert job.done() and job.status == "fail"


def test_exception_with_a_timeout_raises_and_later_returns_the_error(sim, client):
    sim.next_outcomes.append({"fail": ("400", "nope"), "generation_time": 0.5})
    job = client.submit("x")
    with pytest.raises(Imagen4TimeoutError) as info:
        job.exception(0.05)
    assert info.value.task_id == job.task_id and job.task_id in str(info.value)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, cf.TimeoutError)
    err = job.exception(10)  # returned, not raised
    assert isinstance(err, E.GenerationFailedError) and err is job.error
    with pytest.raises(E.GenerationFailedError):
        job.result(0)


def test_result_timeout_names_the_task_and_the_job_goes_on(sim, client):
    sim.next_outcomes.append({"generation_time": 0.5})
    job = client.submit("x")
    with pytest.raises(Imagen4TimeoutError, match=job.task_id):
        job.result(0.05)
    assert not job.done() and job.running()
    assert job.result(10).images


def test_cancel_returns_false_and_the_job_still_completes(sim, client):
    sim.next_outcomes.append({"generation_time": 0.3})
    job = client.submit("x")
    assert job.cancel() is False and not job.cancelled()
    assert job.result(10).images and job.cancel() is False and not job.cancelled()


def test_done_only_after_the_change_callbacks_ran(sim, client):
    sim.next_outcomes.append({"generation_time": 0.2})
    job = client.submit("x")
    seen = []

    def slow_display(j: Job) -> None:
        if j.finished:
            seen.append(("finished", j.done()))
            time.sleep(0.3)  # a slow display update: nobody waiting may wake before it returned
            seen.append(("drawn", time.monotonic()))

    job.on_change(slow_display)
    woke = {}
    waiter = threading.Thread(target=lambda: woke.setdefault("wait", (cf.wait([job], 10), time.monotonic())))
    waiter.start()
    job.result(10)
    returned = time.monotonic()
    waiter.join(10)
    assert seen[0] == ("finished", False)  # finished (the card says done) while not yet done()
    drawn = seen[1][1]
    assert returned >= drawn and woke["wait"][1] >= drawn


def test_a_done_callback_sees_the_history_final_event_written(sim, client, tmp_path):
    history = History(tmp_path / "nb.jsonl")
    session = Session(client=client, history=history)
    request_done = threading.Event()
    seen: dict = {}

    def check(job: Job) -> None:
        events = [json.loads(line) for line in history.path.read_text().splitlines()]
        seen["events"] = [e["event"] for e in events if e.get("task_id") == job.task_id]
        seen["done"] = job.done()
        request_done.set()

    job = session.submit(GenerationRequest.create("a lighthouse"))
    job.add_done_callback(check)
    assert request_done.wait(10)
    assert seen["done"] is True
    assert seen["events"][0] == "submitted" and seen["events"][-1] == "succeeded"
    sim.next_outcomes.append({"fail": ("400", "filtered")})
    failed_job = session.submit(GenerationRequest.create("c"))
    request_done.clear()
    failed_job.add_done_callback(check)
    assert request_done.wait(10)
    assert seen["events"][0] == "submitted" and seen["events"][-1] == "failed"


def test_session_wait_all_uses_the_done_signal(sim, client, tmp_path):
    session = Session(client=client, history=History(tmp_path / "nb.jsonl"))
    sim.next_outcomes.append({"generation_time": 0.6})
    jobs = [session.submit(GenerationRequest.create(f"p{i}")) for i in range(3)]
    with pytest.raises(Imagen4TimeoutError):
        session.wait_all(0.05)
    assert set(session.wait_all(10)) == set(jobs) and not session.pending()
    assert all(j.done() for j in jobs)


def test_a_job_rebuilt_from_the_history_is_done_at_once(sim, client, tmp_path):
    session = Session(client=client, history=History(tmp_path / "nb.jsonl"))
    job = session.submit(GenerationRequest.create("x", seed=5))
    job.result(10)
    again = session.submit(GenerationRequest.create("x", seed=5))  # reused: no request sent
    assert again is not job and again.reused and again.done() and again.finished
    assert cf.wait([again], 0).done == {again}
    assert again.result(0).reused and [im.sha256 for im in again.result(0).images] == [
        im.sha256 for im in job.images]
    assert asyncio.run(_await(again)).reused


async def _await(job: Job) -> Result:
    return await job


@pytest.mark.kernel
def test_top_level_await_of_a_job_in_a_real_kernel(sim, tmp_path):
    (tmp_path / "work").mkdir()
    kernel = Kernel(tmp_path / "work", kernel_env(sim.url, KEY, tmp_path / "ipython"))
    try:
        setup = kernel.execute(
            "from imagen4_jupyter import Imagen4Client, PollSchedule\n"
            "client = Imagen4Client(schedule=PollSchedule.fixed(0.05), cache_dir='cache')\n"
            "job = client.submit('a lighthouse')\n"
            "jobs = [client.submit(f'boat {i}') for i in range(2)]")
        assert setup.ok, setup.text()
        awaited = kernel.execute("result = await job\nprint(type(result).__name__, result.task_id == job.task_id,"
                                 " len(result.images))", timeout=30)
        assert awaited.ok, awaited.text()
        assert awaited.stdout.split() == ["Result", "True", "1"]
        gathered = kernel.execute("import asyncio\nrs = await asyncio.gather(*jobs)\n"
                                  "print([r.task_id for r in rs] == [j.task_id for j in jobs])", timeout=30)
        assert gathered.ok and gathered.stdout.strip() == "True", gathered.text()
        kernel.execute("client.close()")
    finally:
        kernel.close()


def test_jobs_history_entries_and_batch_items_speak_one_stage_vocabulary(sim, make_client, tmp_path):
    """A job's stage, its history entry's stage and its batch item's stage are the same names (api/job.py),
    each view mapping its own words onto them in one place."""
    from imagen4_jupyter import generate_many
    from imagen4_jupyter.api.job import STAGES
    from imagen4_jupyter.records.entries import ENTRY_STAGES
    from imagen4_jupyter.records.history import History
    from imagen4_jupyter.records.session import Session
    from imagen4_jupyter.research.results import STATE_VIEWS

    assert set(ENTRY_STAGES.values()) <= set(STAGES)
    assert {view.stage for view in STATE_VIEWS.values()} <= set(STAGES)
    session = Session(client=make_client(), history=History(tmp_path / ".imagen4" / "one.jsonl"))
    try:
        batch = generate_many(["one vocabulary"], session=session, progress=False)
        (item,) = batch.items
        entry = session.history.get(item.task_id)
        assert item.job.stage == item.stage == entry.stage == "succeeded"
        again = generate_many(["one vocabulary"], session=session, progress=False, reuse="always")
        assert again.items[0].stage == "reused" and again.items[0].job.reused
    finally:
        session.close()
