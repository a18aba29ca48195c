"""One request, one life, in a real kernel against the simulator: what the issue's Must show lists.

- three rapid runs of one seeded cell make one task, and all three cells show its images;
- 100 `--no-wait` cells while earlier tasks are still generating: exactly 100 createTask, at most 20 in any
  10 s, none answered 429, none "not sent", and no cell blocks;
- an interrupt while a request is on its way (its outcome is recorded when the answer comes; never resent) and
  while it waits out a 429's pause (withdrawn: never sent, now or by a later resume).
"""
from __future__ import annotations

import json
import time

import pytest
from conftest import KEY
from kernel_util import FAST_CONFIG, Kernel, kernel_env

from imagen4_jupyter.records.history import History
from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel

SETUP = f"%load_ext imagen4_jupyter\n{FAST_CONFIG}\n%config Imagen4Magics.notebook = 'life.ipynb'"


def start(tmp_path, sim, **env_extra) -> Kernel:
    env = kernel_env(sim.url, KEY, tmp_path / "ipython")
    env.update(env_extra)
    k = Kernel(tmp_path, env)
    assert k.execute(SETUP).ok
    return k


def send(k: Kernel, code: str) -> str:
    """Queue an execute request without waiting (what a fast Shift+Enter does)."""
    return k.kc.execute(code, allow_stdin=True, stop_on_error=False)


def idle(k: Kernel, msg_id: str, timeout: float = 60) -> list[dict]:
    """Wait for the cell's idle status; its own iopub messages."""
    k.wait_for(lambda msgs: any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                                and m["parent_header"].get("msg_id") == msg_id for m in msgs), timeout)
    return [m for m in k.messages if m["parent_header"].get("msg_id") == msg_id]


def display_ids(messages: list[dict]) -> list[str]:
    return [m["content"]["transient"]["display_id"] for m in messages
            if m["msg_type"] == "display_data" and (m["content"].get("transient") or {}).get("display_id")]


def images_in(k: Kernel, ids: list[str]) -> list[dict]:
    """The image updates that reached these display ids (from any parent: they come from a thread)."""
    return [m for m in k.updates_for(ids) if "image/png" in m["content"]["data"]]


def events(history_path) -> list[dict]:
    return [json.loads(line) for line in history_path.read_text().splitlines()]


def test_three_rapid_runs_of_a_seeded_cell_make_one_task_and_every_cell_shows_it(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.2, 0.3), generation_time=(1.5, 2.0), image_scale=0.0625,
                   enforce_limits=False) as sim:
        k = start(tmp_path, sim)
        try:
            cell = "%%imagen4 -s 5\nthree quick runs of one seeded cell"
            runs = [send(k, cell) for _ in range(3)]  # Shift+Enter three times within a second
            cells = [idle(k, run) for run in runs]
            ids = [display_ids(msgs) for msgs in cells]
            assert all(len(i) == 2 for i in ids), ids  # a card and one image slot each
            k.wait_for(lambda _m: all(images_in(k, i) for i in ids), timeout=60)
            assert sim.count("createTask") == 1 and len(sim.tasks) == 1
            cards = [m["content"]["data"]["text/plain"] for msgs in cells for m in msgs
                     if m["msg_type"] == "display_data"]
            follows = [c for c in cards if "Follows the identical request" in c]
            assert len(follows) == 2  # the second and third runs say they follow the first
            (task_id,) = sim.tasks
            for i in ids:  # each cell's image carries the one task's provenance
                (update,) = images_in(k, i)
                assert update["content"]["metadata"]["imagen4"]["task_id"] == task_id
            logged = events(tmp_path / ".imagen4" / "life.jsonl")
            assert [e["event"] for e in logged].count("queued") == 1
            assert [e["event"] for e in logged].count("submitted") == 1
        finally:
            k.close()


def test_100_no_wait_cells_while_earlier_tasks_generate_stay_under_the_limits(tmp_path):
    """Long tasks keep the status checks busy while later cells are sent: a slot is counted when a request
    leaves, on the sender's own threads, so the service never sees more than the documented limits."""
    with Simulator(api_keys=(KEY,), queue_time=(1.0, 4.0), generation_time=(6.0, 12.0), time_scale=1.5,
                   image_scale=0.0625) as sim:  # the documented limits, enforced; tasks take 10-24 s
        k = start(tmp_path, sim, APIKLEY_LIMITS="")  # the documented limits on the client's side too
        try:
            runs = [send(k, f"%%imagen4 --no-wait --force\ncell number {i} of a hundred") for i in range(100)]
            t0 = time.monotonic()
            replies = []
            for run in runs:
                idle(k, run, timeout=120)
                replies.append(time.monotonic() - t0)
            # every cell returned at once: 100 cells in far less than the 50 s the create limit needs
            assert replies[-1] < 25, replies[-1]
            assert sim.count("createTask") < 100  # the sender is still at work after the last cell returned
            done = k.execute("%imagen4 wait", timeout=400)
            assert done.ok, done.error_text
        finally:
            k.close()
        prompts = [json.loads(r.body)["input"]["prompt"] for r in sim.requests if r.endpoint == "createTask"]
        assert sorted(prompts) == sorted(f"cell number {i} of a hundred" for i in range(100))  # each once
        assert sim.max_in_window("createTask", 10.0) <= 20
        assert sim.max_in_window("recordInfo", 1.0) <= 10
        assert sim.count_429() == 0
        logged = events(tmp_path / ".imagen4" / "life.jsonl")
        kinds = [e["event"] for e in logged]
        assert kinds.count("submitted") == 100 and kinds.count("succeeded") == 100
        assert "not_sent" not in kinds and "outcome_unknown" not in kinds
        # while later cells were being sent, earlier tasks were still generating
        created = sorted(r.time for r in sim.requests if r.endpoint == "createTask")
        assert created[-1] - created[0] > 40  # the create limit spread them over ~50 s
        assert len(sim.tasks) == 100


def test_an_interrupt_while_the_request_is_on_its_way_records_its_outcome_and_never_resends(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.1, 0.2), generation_time=(0.5, 0.6), image_scale=0.0625,
                   enforce_limits=False) as sim:
        k = start(tmp_path, sim)
        try:
            sim.inject("createTask", times=1, delay=3.0)  # the answer takes 3 s
            run = send(k, "%%imagen4 --wait -s 11\ninterrupted while sending")
            deadline = time.monotonic() + 20
            while sim.count("createTask") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sim.count("createTask") == 1
            k.km.interrupt_kernel()
            msgs = idle(k, run)
            text = " ".join(m["content"].get("text", "") + m["content"].get("data", {}).get("text/plain", "")
                            for m in msgs)
            assert "on their way" in text and "none is sent again" in text
            assert not any(m["msg_type"] == "error" for m in msgs)  # no KeyboardInterrupt traceback
            assert "KeyboardInterrupt" not in text
            history = tmp_path / ".imagen4" / "life.jsonl"
            deadline = time.monotonic() + 20  # the answer comes: the task is recorded and followed
            while "succeeded" not in [e["event"] for e in events(history)] and time.monotonic() < deadline:
                time.sleep(0.1)
            kinds = [e["event"] for e in events(history)]
            assert kinds[:3] == ["queued", "sending", "submitted"] and "succeeded" in kinds
            again = k.execute("%%imagen4 --wait -s 11\ninterrupted while sending")  # the natural re-run: reused
            assert again.ok and "Reused" in again.text()
            resume = k.execute("%imagen4 resume")
            assert resume.ok and "Nothing to resume" in resume.text(), resume.text()
        finally:
            k.close()
        assert sim.count("createTask") == 1 and len(sim.tasks) == 1


def test_an_interrupt_during_a_429_pause_withdraws_the_request_for_good(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.1, 0.2), generation_time=(0.5, 0.6), image_scale=0.0625,
                   enforce_limits=False) as sim:
        k = start(tmp_path, sim)
        try:
            sim.inject("createTask", times=1, code=429, retry_after=5)  # refused: wait 5 s, then send again
            run = send(k, "%%imagen4 --wait -s 12\ninterrupted while waiting")
            deadline = time.monotonic() + 20
            while sim.count("createTask") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)  # the 429 answer is in: the request waits out its pause in the sender's queue
            k.km.interrupt_kernel()
            msgs = idle(k, run)
            text = " ".join(m["content"].get("text", "") + m["content"].get("data", {}).get("text/plain", "")
                            for m in msgs)
            assert "withdrawn" in text and not any(m["msg_type"] == "error" for m in msgs)
            time.sleep(6)  # past the pause: nothing is sent
            assert sim.count("createTask") == 1
            resume = k.execute("%imagen4 resume")
            assert resume.ok and "Nothing to resume" in resume.text(), resume.text()
        finally:
            k.kill()  # and a dead kernel's history offers nothing to send either
        history = History(tmp_path / ".imagen4" / "life.jsonl")
        assert history.waiting() == []
        kinds = [e["event"] for e in history.iter_events()]
        assert kinds == ["queued", "sending", "queued", "cancelled"]
        k2 = start(tmp_path, sim)
        try:
            out = k2.execute("%imagen4 resume")
            assert out.ok and "Nothing to resume" in out.text(), out.text()
        finally:
            k2.close()
        assert sim.count("createTask") == 1 and len(sim.tasks) == 0
