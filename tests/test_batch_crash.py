"""A batch killed with createTask requests in flight, then run again: nothing is paid twice.

A real kernel runs `generate_many(..., concurrency=4)` against a simulator whose createTask answers come late
(a `delay` fault: the task is created when the delay ends, as a slow service would), so 4 requests are in
flight when the kernel is SIGKILLed. The same batch in a new kernel creates only the items never sent; the 4
are reported as outcome unknown (never created again), also after `%imagen4 resume` has closed their records.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FAST_POLL, FAST_RETRY, KEY
from kernel_util import FAST_CONFIG, Kernel, kernel_env, wait_until
from reliability_util import KERNEL_KEY

from imagen4_jupyter import Imagen4Client, OutcomeUnknownError, generate_many
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.research.items import batch_id
from imagen4_jupyter.simulator import Simulator

N = 8
PROMPTS = [f"crash batch {i}" for i in range(N)]
BATCH = f"from imagen4_jupyter import generate_many\nprompts = {PROMPTS!r}\n"


def events(path: Path) -> list[dict]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]



def creates_per_key(sim) -> Counter:
    """createTask requests the simulator received, per request (prompt, seed, ratio, model): what was billed."""
    keys = Counter()
    for task in sim.tasks.values():
        inp = task.param["input"]
        keys[(inp["prompt"], inp.get("seed"), inp.get("aspect_ratio"), task.model)] += 1
    return keys


def start(cwd: Path, env: dict) -> Kernel:
    k = Kernel(cwd, env)
    assert k.execute("%load_ext imagen4_jupyter").ok
    assert k.execute(FAST_CONFIG).ok
    return k


@pytest.mark.kernel
def test_a_batch_killed_with_4_creates_in_flight_and_run_again_creates_nothing_twice(tmp_path):
    with Simulator(api_keys=(KERNEL_KEY,), queue_time=(0.0, 0.02), generation_time=(0.05, 0.1),
                   image_scale=0.0625) as sim:
        cwd = tmp_path / "nb"
        cwd.mkdir()
        env = kernel_env(sim.url, KERNEL_KEY, tmp_path / "ipython")
        hist = cwd / ".imagen4" / "history.jsonl"
        sim.inject("createTask", times=4, delay=4.0)  # the first 4 answers come 4 s late; the tasks exist then

        k = start(cwd, env)
        try:
            k.kc.execute(BATCH + "r = generate_many(prompts, concurrency=4, progress=False)")
            wait_until(lambda: sim.count("createTask") >= 4, what="4 createTask in flight")
            wait_until(lambda: hist.exists() and hist.read_bytes().count(b'"event":"sending"') >= 4,
                       what="their sending events")
        finally:
            k.kill()  # SIGKILL with the 4 answers still on their way
        assert sim.count("createTask") == 4
        evs = events(hist)
        assert not [e for e in evs if e["event"] in ("submitted", "outcome_unknown")]  # no answer was recorded
        sending = [e for e in evs if e["event"] == "sending"]
        queued = {e["local_id"]: e for e in evs if e["event"] == "queued"}  # the request and its batch tag
        bid = batch_id([GenerationRequest.create(p) for p in PROMPTS])
        assert len(sending) == 4 and all(queued[e["local_id"]]["batch"]["id"] == bid for e in sending)
        wait_until(lambda: len(sim.tasks) == 4, what="the simulator creating the 4 late tasks")  # billed

        k2 = start(cwd, env)
        try:
            again = k2.execute(BATCH + "again = generate_many(prompts, concurrency=4, progress=False)\n"
                                       "print(sorted(i.state for i in again))\nprint(again.summary())\n"
                                       "print([i.row()['error'] for i in again if i.state == 'lost-unknown'][0])\n"
                                       "display(again)", timeout=90)
            assert again.ok, again.text()
            assert "['lost-unknown', 'lost-unknown', 'lost-unknown', 'lost-unknown', 'success', 'success', " \
                   "'success', 'success']" in again.stdout, again.text()
            assert "4 success, 4 outcome unknown" in again.stdout and "failed" not in again.stdout
            assert "NOT resent" in again.stdout and "force=True" in again.stdout  # the hint says what to do
            html = [m["content"]["data"]["text/html"] for m in again.displays() if "text/html" in m["content"]["data"]]
            assert html and html[-1].count(">outcome unknown</span></td>") == 4
            assert sim.count("createTask") == N
            assert max(creates_per_key(sim).values()) == 1 and len(creates_per_key(sim)) == N  # none paid twice

            # resume closes the dead kernel's 4 records as outcome unknown, keeping their batch tag ...
            resume = k2.execute("%imagen4 resume")
            assert resume.ok and "4 request(s) may have reached the service" in resume.text(), resume.text()
            unknown = [e for e in events(hist) if e["event"] == "outcome_unknown"]
            assert len(unknown) == 4 and {e["batch"]["index"] for e in unknown} == {
                queued[e["local_id"]]["batch"]["index"] for e in sending}
            # ... so the batch run once more still does not send them (and reuses the others)
            third = k2.execute(BATCH + "third = generate_many(prompts, concurrency=4, progress=False)\n"
                                       "print('lost', len(third.lost), 'reused', sum(i.origin == 'reused' "
                                       "for i in third))", timeout=90)
            assert third.ok and "lost 4 reused 4" in third.stdout, third.text()
            assert sim.count("createTask") == N
        finally:
            k2.close()
        assert KERNEL_KEY.encode() not in hist.read_bytes()


LEASE_HOLDER = ("import sys, time\nfrom imagen4_jupyter.records.lease import hold_lease\n"
                "print(hold_lease(sys.argv[1]).name, flush=True)\ntime.sleep(float(sys.argv[2]))\n")


def _lease_holder(folder: Path, seconds: float) -> tuple[subprocess.Popen, str]:
    """Another process that takes its lease in `folder` (records/lease.py) and holds it `seconds`: (it, its name)."""
    proc = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _dead_pid(folder: Path) -> tuple[int, str]:
    """The pid and lease name of a process that has ended (what a killed kernel leaves in its `queued` events)."""
    proc, owner = _lease_holder(folder, 0)
    proc.wait()
    return proc.pid, owner


def test_a_request_a_dead_kernel_queued_but_never_sent_is_sent_once_by_the_batch(sim, tmp_path):
    """`queued` without `sending` (certainly never sent): the batch sends it, under its local id, so neither
    `%imagen4 resume` nor the next run sends it again; a `sending` without an end of another request with the
    same key (a cell's) is never sent again."""
    client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY,
                           cache_dir=tmp_path / "images", timeout=(2.0, 5.0))
    history = History(tmp_path / "history.jsonl")
    prompts = ["queued one", "sent one", "fresh one"]
    requests = [GenerationRequest.create(p) for p in prompts]
    bid = batch_id(requests)
    (pid, owner), host = _dead_pid(tmp_path), socket.gethostname()
    history.append({"event": "queued", "local_id": "q-dead-1", "request": requests[0].to_dict(),
                    "request_key": requests[0].key(), "source": "batch", "pid": pid, "host": host,
                    "owner": owner, "batch": {"id": bid, "index": 0}})
    history.append({"event": "sending", "local_id": "s-dead-2", "request": requests[1].to_dict(),  # a cell's
                    "request_key": requests[1].key(), "source": "magic", "pid": pid, "host": host, "owner": owner})
    session = Session(client=client, history=History(tmp_path / "history.jsonl"))
    try:
        plan = generate_many(prompts, session=session, dry_run=True)
        assert plan.actions == ["create", "lost", "create"] and "1 outcome unknown (not resent)" in plan.line()
        result = generate_many(prompts, session=session, concurrency=2, progress=False)
        assert [i.state for i in result] == ["success", "lost-unknown", "success"]
        assert "NOT resent" in result.rows[1]["error"] and "outcome unknown" in result._repr_html_()
        assert sim.count("createTask") == 2
        submitted = [e for e in events(tmp_path / "history.jsonl") if e["event"] == "submitted"]
        assert [e.get("local_id") for e in submitted if e["request_key"] == requests[0].key()] == ["q-dead-1"]
        again = generate_many(prompts, session=session, progress=False)
        assert [i.state for i in again] == ["success", "lost-unknown", "success"]
        assert [i.origin for i in again] == ["reused", "created", "reused"]
        resumed = session.resume()  # the queued request has an end now: resume sends nothing for it
        assert [j.local_id for j in resumed] == ["s-dead-2"] and isinstance(resumed[0].error, OutcomeUnknownError)
        assert sim.count("createTask") == 2 and os.getpid() != pid
    finally:
        session.close()


def test_a_request_queued_by_a_kernel_still_running_is_left_to_it(sim, tmp_path):
    """A `queued` event whose kernel still runs is that kernel's to send: the batch does not send it (it would
    be sent twice); once that process has ended, the batch sends it, once."""
    client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY,
                           cache_dir=tmp_path / "images", timeout=(2.0, 5.0))
    request = GenerationRequest.create("held elsewhere", seed="4")
    other, owner = _lease_holder(tmp_path, 60)
    History(tmp_path / "history.jsonl").append(
        {"event": "queued", "local_id": "q-live-1", "request": request.to_dict(), "request_key": request.key(),
         "source": "magic", "pid": other.pid, "host": socket.gethostname(), "owner": owner})
    session = Session(client=client, history=History(tmp_path / "history.jsonl"))
    try:
        held = generate_many([request], session=session, progress=False)
        assert held[0].state == "lost-unknown" and "still running" in held.rows[0]["error"]
        assert sim.count("createTask") == 0
        other.kill()
        other.wait(10)
        sent = generate_many([request], session=session, progress=False)
        assert sent[0].state == "success" and sim.count("createTask") == 1
        assert [e.get("local_id") for e in events(tmp_path / "history.jsonl") if e["event"] == "submitted"] == \
            ["q-live-1"]
        assert session.history.waiting() == []  # its record has an end: resume sends nothing
    finally:
        other.kill()
        session.close()
