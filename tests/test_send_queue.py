"""The local send queue under the create limit: a burst never blocks the caller, stays under the limit with no
429, is in the history before anything is sent, and survives a kernel crash without sending anything twice."""
from __future__ import annotations

import json
import time

from conftest import FAST_POLL, FAST_RETRY, KEY
from kernel_util import Kernel, kernel_env

from imagen4_jupyter import GenerationRequest
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

FAST_SIM = dict(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625)


def created_prompts(sim) -> list[str]:
    return [json.loads(r.body)["input"]["prompt"] for r in sim.requests if r.endpoint == "createTask"]


def kinds_by_local_id(history: History) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ev in history.iter_events():
        if ev.get("local_id"):
            out.setdefault(ev["local_id"], []).append(ev["event"])
    return out


def test_a_burst_returns_at_once_and_stays_under_the_create_limit(tmp_path):
    with Simulator(create_limit=(3, 2.0), **FAST_SIM) as sim:
        history = History(tmp_path / ".imagen4" / "burst.jsonl")
        session = Session(history=history, client_options=dict(
            api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "images",
            limits=Limits(create=(3, 2.0), query=(10, 1.0))))
        try:
            t0 = time.monotonic()
            jobs = [session.submit(GenerationRequest.create(f"burst {i}")) for i in range(8)]
            took = time.monotonic() - t0
            queued = [j for j in jobs if j.task_id is None]  # every request leaves from the sender's threads
            assert len(queued) >= 5 and {j.status for j in queued[-5:]} == {"pacing"}
            assert all(j.send_at is not None for j in queued)
            assert took < 2.0  # less than one window: sending all 8 would have taken two more windows
            waiting = history.waiting()  # in the history before anything is sent
            assert {ev["local_id"] for ev in waiting} >= {j.local_id for j in queued[-5:]}
            session.wait_all(60)
            assert [j.error for j in jobs] == [None] * 8 and all(j.task_id for j in jobs)
            assert sorted(created_prompts(sim)) == sorted(f"burst {i}" for i in range(8))  # each sent once
            assert sim.max_in_window("createTask", 2.0) <= 3 and sim.count_429() == 0
            steps = kinds_by_local_id(history)
            assert len(steps) == 8 and all(s == ["queued", "sending", "submitted"] for s in steps.values())
            assert history.waiting() == []
            assert {e.task_id for e in history.entries()} == {j.task_id for j in jobs}
        finally:
            session.close()


KERNEL_SESSION = """
from imagen4_jupyter import GenerationRequest
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.api.schedules import PollSchedule
from imagen4_jupyter.records.session import Session
s = Session(history_folder=".imagen4", notebook="crash.ipynb",
            client_options=dict(schedule=PollSchedule.fixed(0.05), limits=Limits(create=(1, 3.0), query=None)))
"""


def test_a_crash_with_requests_in_the_local_queue_then_resume(tmp_path):
    with Simulator(create_limit=(1, 3.0), enforce_limits=True, **FAST_SIM) as sim:
        env = kernel_env(sim.url, KEY, tmp_path / "ipython")
        k = Kernel(tmp_path, env)
        try:
            assert k.execute(KERNEL_SESSION).ok
            first = k.execute("jobs = [s.submit(GenerationRequest.create('crash 0'))]\n"
                              "s.client.wait_sent(jobs[0], 20)\nprint([j.task_id is not None for j in jobs])")
            assert "[True]" in first.stdout
            sim.inject("createTask", times=1, delay=60)  # the next request: sent, then no answer for a minute
            queued = k.execute("jobs += [s.submit(GenerationRequest.create(f'crash {i}')) for i in range(1, 4)]\n"
                               "print(sorted(j.status for j in jobs))")
            assert queued.stdout.count("pacing") == 3
            deadline = time.monotonic() + 20
            while "crash 1" not in created_prompts(sim) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "crash 1" in created_prompts(sim)  # it is being sent; 2 and 3 wait for their windows
        finally:
            k.kill()
        history = History(tmp_path / ".imagen4" / "crash.jsonl")
        waiting = {ev["request"]["prompt"]: ev["sending"] for ev in history.waiting()}
        assert waiting == {"crash 1": True, "crash 2": False, "crash 3": False}
        sim.clear_faults()

        k2 = Kernel(tmp_path, env)
        try:
            assert k2.execute(KERNEL_SESSION).ok
            out = k2.execute("r = s.resume()\ns.wait_all(60)\n"
                             "print(sorted((j.request.prompt, type(j.error).__name__) for j in r))")
            assert out.ok, out.error_text
            outcomes = dict(eval(out.stdout.strip()))
            assert outcomes["crash 1"] == "OutcomeUnknownError"  # never sent again
            assert outcomes["crash 2"] == outcomes["crash 3"] == "NoneType"  # certainly never sent: sent now
        finally:
            k2.close()
        # none created twice (a resend may meet a 429 first: the account's window still holds crash 1, which
        # counts from its arrival although its answer never came)
        made = sorted(t.prompt for t in sim.tasks.values())  # crash 1 is still in its 60 s delay, unprocessed
        assert made == ["crash 0", "crash 2", "crash 3"]
        assert sorted(set(created_prompts(sim))) == [f"crash {i}" for i in range(4)]
        assert len(created_prompts(sim)) - sim.count_429("createTask") == 4
        history = History(tmp_path / ".imagen4" / "crash.jsonl")
        assert history.waiting() == []
        done = {e.request["prompt"] for e in history.entries() if e.succeeded}
        assert {"crash 0", "crash 2", "crash 3"} <= done
        assert any((u.get("request") or {}).get("prompt") == "crash 1" for u in history.unknown)


def test_45_submissions_in_a_row_under_the_documented_limits(tmp_path):
    """The documented limits, on both sides: the simulator enforces them, the client stays under them."""
    with Simulator(**FAST_SIM) as sim:  # limits on by default: 20 createTask / 10 s, 10 recordInfo / s
        session = Session(history=History(tmp_path / ".imagen4" / "row.jsonl"), client_options=dict(
            api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "images",
            limits=Limits()))
        try:
            jobs = [session.submit(GenerationRequest.create(f"in a row {i}", seed=str(i))) for i in range(45)]
            assert sum(j.task_id is None for j in jobs) >= 25  # queued locally, the cells returned at once
            session.wait_all(120)
        finally:
            session.close()
        assert [j.error for j in jobs] == [None] * 45
        assert len(sim.tasks) == 45 and sorted(created_prompts(sim)) == sorted(f"in a row {i}" for i in range(45))
        assert sim.max_in_window("createTask", 10.0) <= 20
        assert sim.max_in_window("recordInfo", 1.0) <= 10
        assert sim.count_429() == 0


def test_a_crash_during_a_createtask_sent_at_once_leaves_it_as_maybe_sent(tmp_path):
    """No waiting for a slot: the request is still written ahead of its createTask (`queued` with the request,
    then `sending`), so a kernel killed while the answer is on its way loses nothing, and resume never resends
    it."""
    with Simulator(**FAST_SIM) as sim:
        env = kernel_env(sim.url, KEY, tmp_path / "ipython")
        k = Kernel(tmp_path, env)
        try:
            assert k.execute(KERNEL_SESSION.replace("create=(1, 3.0)", "create=(5, 3.0)")).ok
            ok = k.execute("j = s.submit(GenerationRequest.create('direct 0'))\nprint(j.result(20).task_id)")
            assert ok.ok and ok.stdout.strip().startswith("task_"), ok.error_text
            sim.inject("createTask", times=1, delay=60)
            k.kc.execute("s.submit(GenerationRequest.create('direct 1'))")  # the sender waits for the answer
            deadline = time.monotonic() + 20
            while "direct 1" not in created_prompts(sim) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "direct 1" in created_prompts(sim)
        finally:
            k.kill()
        history = History(tmp_path / ".imagen4" / "crash.jsonl")
        steps = kinds_by_local_id(history)
        assert sorted(steps.values()) == [["queued", "sending"], ["queued", "sending", "submitted"]]
        assert [(ev["request"]["prompt"], ev["sending"]) for ev in history.waiting()] == [("direct 1", True)]
        sim.clear_faults()

        k2 = Kernel(tmp_path, env)
        try:
            assert k2.execute(KERNEL_SESSION).ok
            out = k2.execute("r = s.resume()\nprint([(j.request.prompt, type(j.error).__name__) for j in r])")
            assert out.ok, out.error_text
            assert eval(out.stdout.strip()) == [("direct 1", "OutcomeUnknownError")]
        finally:
            k2.close()
        assert created_prompts(sim) == ["direct 0", "direct 1"]  # never sent again
        history = History(tmp_path / ".imagen4" / "crash.jsonl")
        assert history.waiting() == []
        assert [(u.get("request") or {}).get("prompt") for u in history.unknown] == ["direct 1"]
