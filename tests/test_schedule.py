"""SmartSchedule: the advised fallback, learned windows, dense polling only near the end, and seeding from the
history (per aspect ratio and image count) when a session creates its client."""
from __future__ import annotations

import json
import time

import pytest
from conftest import FAST_RETRY, KEY

from imagen4_jupyter import Imagen4Client, PollSchedule
from imagen4_jupyter.api.job import Job, Ledger, stage_of
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.api.schedules import SmartSchedule, seed_from_history
from imagen4_jupyter.api.task import TaskRecord
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator


def see(job: Job, rec: TaskRecord) -> None:
    """What the poller does with a status answer: the job's ledger moves it to that record's stage."""
    job.ledger.move(job, stage_of(rec.state), record=rec)


def job(ratio="1:1", n=1, created=1000.0) -> Job:
    return Job("task_x", GenerationRequest.create("p", aspect_ratio=ratio, num_images=n), created_at=created)


def record(state: str, create_ms: int, update_ms: int) -> TaskRecord:
    return TaskRecord(task_id="task_x", state=state, create_time_ms=create_ms, update_time_ms=update_ms)


def test_default_client_schedule_is_smart_and_starts_as_the_advice(tmp_path):
    client = Imagen4Client(KEY, "http://127.0.0.1:9", cache_dir=tmp_path)
    try:
        assert isinstance(client.schedule, SmartSchedule) and client.schedule.max_wait == PollSchedule().max_wait
    finally:
        client.close()
    s, advised, j = SmartSchedule(), PollSchedule(), job()
    for t in (1000.0, 1010.0, 1040.0, 1200.0):
        assert s.next_delay(j, t) == advised.next_delay(j, t)
    s.learn("1:1", 1, 10.0)
    s.learn("1:1", 1, 10.5)  # two samples are not enough
    see(j, record("generating", 1_000_000, 1_004_000))
    assert s.next_delay(j, 1005.0) == advised.next_delay(j, 1005.0) and s.window(j) is None


def test_window_is_per_ratio_and_count_with_an_overall_fallback():
    s = SmartSchedule(margin=0.0)
    for sec in (9.0, 10.0, 11.0):
        s.learn("1:1", 1, sec)
    for sec in (19.0, 20.0, 21.0, 22.0):
        s.learn("16:9", 4, sec)
    assert s.window(job("1:1", 1)) == (9.0, 11.0)
    assert s.window(job("16:9", 4)) == (19.0, 22.0)
    lo, hi = s.window(job("3:4", 2))  # never seen: every duration learned so far
    assert lo == 9.0 and hi == 22.0
    s.learn("1:1", 1, 0)  # nonsense durations are ignored
    s.learn("1:1", 1, 99999)
    assert s.window(job("1:1", 1)) == (9.0, 11.0)


def test_sample_count_is_bounded_and_keeps_the_newest():
    s = SmartSchedule(max_samples=20, margin=0.0, low=0.0, high=1.0)
    for i in range(500):  # a spread of 5-14.9 s, then the service gets slower
        s.learn("1:1", 1, 5.0 + (i % 100) / 10)
    lo, hi = s.window(job())
    assert len(s._samples[("1:1", 1, "google/imagen4")]) == 20 and lo == 13.0 and hi == 14.9  # the last 20 learned
    for sec in (5.0, 30.0) * 10:
        s.learn("1:1", 1, sec)
    assert s.window(job()) == (5.0, 30.0)


def test_polls_sparsely_while_queued_and_densely_only_near_the_predicted_end():
    s = SmartSchedule(queue_interval=3.0, fine=0.35, margin=0.1)
    for sec in (9.0, 10.0, 11.0):
        s.learn("1:1", 1, sec)
    j = job(created=1000.0)
    see(j, record("queuing", 1_000_000, 1_000_000))
    assert s.next_delay(j, 1001.0) == pytest.approx(0.8 * 8.9)  # no request until generation can have started
    # generation started at server time +4 s (updateTime); the clocks agree (createTime == created_at)
    see(j, record("generating", 1_000_000, 1_004_000))
    assert s.next_delay(j, 1006.0) == pytest.approx(1004.0 + 8.9 - 1006.0)  # sleep until the earliest end
    assert j.generating_since_ms == 1_004_000
    assert s.next_delay(j, 1013.0) == 0.35 and s.next_delay(j, 1015.0) == 0.35  # inside the window
    late = s.next_delay(j, 1019.1)  # later than anything seen: back off, never more than the advice
    assert 0.35 < late <= PollSchedule().next_delay(j, 1019.1)


def test_observe_learns_from_a_finished_job():
    s = SmartSchedule()
    j = job()
    see(j, record("generating", 1_000_000, 1_004_000))
    s.next_delay(j, 1005.0)  # first sight of `generating` registers the done callback
    done = TaskRecord(task_id="task_x", state="success", result_urls=["http://x/1.png"],
                      create_time_ms=1_000_000, update_time_ms=1_014_000, complete_time_ms=1_014_000)
    see(j, done)
    Ledger().move(j, "succeeded", images=[])
    assert s._samples[("1:1", 1, "google/imagen4")] == [10.0]


def _history_line(tid: str, ratio: str, n: int, gen_ms: int | None) -> list[dict]:
    req = GenerationRequest.create(f"prompt {tid}", aspect_ratio=ratio, num_images=n)
    done = {"event": "succeeded", "task_id": tid, "urls": [], "images": [], "complete_time_ms": 2_000_000}
    if gen_ms is not None:
        done["generating_since_ms"] = 2_000_000 - gen_ms
    return [{"event": "submitted", "task_id": tid, "request": req.to_dict(), "request_key": req.key()}, done]


def test_seed_from_history_per_ratio_and_count(tmp_path):
    path = tmp_path / "h.jsonl"
    events = []
    for i, sec in enumerate((10.0, 10.4, 10.8)):
        events += _history_line(f"a{i}", "1:1", 1, int(sec * 1000))
    for i, sec in enumerate((20.0, 21.0, 22.0)):
        events += _history_line(f"b{i}", "16:9", 4, int(sec * 1000))
    events += _history_line("old", "1:1", 1, None)  # written before durations were recorded: skipped
    events.append({"event": "submitted", "task_id": "c0", "request": {"prompt": "x"}})  # unfinished: skipped
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    s = SmartSchedule(margin=0.0)
    assert seed_from_history(s, History(path)) == 6
    assert s.window(job("1:1", 1)) == (10.0, 10.8) and s.window(job("16:9", 4)) == (20.0, 22.0)
    assert seed_from_history(PollSchedule(), History(path)) == 0  # nothing to teach a fixed schedule
    s2 = SmartSchedule()
    assert seed_from_history(s2, History(path), limit=2) == 2  # only the newest
    assert s2._samples[("16:9", 4, "google/imagen4")] == [21.0, 22.0]


def test_session_records_durations_and_a_new_session_starts_with_them(tmp_path):
    scale = 0.05
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.05), generation_time=(0.3, 0.4), image_scale=0.0625) as sim:
        def session() -> Session:
            smart = SmartSchedule(fallback=PollSchedule().scaled(scale), queue_interval=0.05, fine=0.02,
                                  margin=0.02)
            return Session(history=History(tmp_path / ".imagen4" / "h.jsonl"),
                           client_options={"api_key": KEY, "base_url": sim.url, "schedule": smart,
                                           "retry": FAST_RETRY})

        first = session()
        try:
            assert first.client.schedule.window(job()) is None  # empty history: the advice
            jobs = [first.submit(GenerationRequest.create(f"learn {i}", aspect_ratio="4:3", num_images=2))
                    for i in range(3)]
            for j in jobs:
                j.wait(30)
            deadline = time.monotonic() + 10  # the history is written by callbacks just after `done`
            while sum(e.succeeded for e in first.history.entries()) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            first.close()
        recorded = [e for e in History(tmp_path / ".imagen4" / "h.jsonl").entries() if e.succeeded]
        assert len(recorded) == 3
        for e in recorded:
            assert 0.25 <= (e.complete_time_ms - e.generating_since_ms) / 1000 <= 0.6

        second = session()
        try:
            lo, hi = second.client.schedule.window(job("4:3", 2))  # seeded when the client was created
            assert 0.2 <= lo <= hi <= 0.7
            assert second.client.schedule.window(job("1:1", 1)) is not None  # the overall fallback
            sim.reset_counts()
            j = second.submit(GenerationRequest.create("after learning", aspect_ratio="4:3", num_images=2))
            j.wait(30)
            assert sim.count("recordInfo") <= 8  # the advice scaled would be ~1 check per 0.125 s
        finally:
            second.close()
