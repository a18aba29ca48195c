"""Neighbours on one account: processes of one user on one machine share the documented limits (api/pacing.py's
shared windows), a price is never measured while a neighbour spends, and resume sends a queued request only once
its owner's lease has lapsed (records/lease.py). Real processes against the simulator over loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST_POLL, FAST_RETRY, KEY

from imagen4_jupyter import GenerationRequest
from imagen4_jupyter.api.pacing import Limits, SharedWindow
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.lease import owner_state
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

FAST_SIM = dict(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625)

# One process of the account: a Session under the documented limits (shared with the others through
# IMAGEN4_PACING_DIR), `n` requests submitted on "go", then waited for; one JSON line of what it saw.
WORKER = r"""
import json, sys, time
from imagen4_jupyter import GenerationRequest
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.api.schedules import PollSchedule, RetryPolicy
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
url, key, folder, name, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
limits = Limits() if len(sys.argv) < 7 else Limits(create=(int(sys.argv[6]), float(sys.argv[7])), query=None)
s = Session(history=History(f"{folder}/{name}.jsonl"), client_options=dict(
    api_key=key, base_url=url, schedule=PollSchedule.fixed(0.05), cache_dir=f"{folder}/images-{name}",
    retry=RetryPolicy(attempts=2, base=0.01, cap=0.05, max_retry_after=0.2), limits=limits))
s.client  # built before "go": the first submit pays no import
print("ready", flush=True)
sys.stdin.readline()
took, jobs = [], []
for i in range(n):
    t = time.monotonic()
    jobs.append(s.submit(GenerationRequest.create(f"{name} {i}")))
    took.append(time.monotonic() - t)
print(json.dumps({"submitted": time.time(), "took": took}), flush=True)
if sys.stdin.readline().strip() == "wait":
    s.wait_all(240)
    print(json.dumps({"errors": [repr(j.error) for j in jobs if j.error],
                      "tasks": [j.task_id for j in jobs]}), flush=True)
s.close()
"""


def worker_env(pacing: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "APIKLEY_LIMITS"}
    env.update(IMAGEN4_PACING_DIR=str(pacing), PYTHONUNBUFFERED="1", **extra)
    return env


class Worker:
    def __init__(self, sim, folder: Path, name: str, n: int, env: dict, *limit: str):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, sim.url, KEY, str(folder), name, str(n), *limit],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def line(self) -> str:
        assert self.proc.stdout is not None
        out = self.proc.stdout.readline()
        assert out, f"{self.name} ended early (exit {self.proc.poll()})"
        return out.strip()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def creates_by_worker(sim) -> list[tuple[float, str]]:
    """(arrival, worker name) of every createTask the simulator received, in arrival order."""
    out = []
    for r in sim.requests:
        if r.endpoint == "createTask":
            out.append((r.time, json.loads(r.body)["input"]["prompt"].rsplit(" ", 1)[0]))
    return sorted(out)


def run_together(sim, tmp_path: Path, plan: list[tuple[str, int, float]]) -> dict[str, dict]:
    """Start one worker per (name, requests, seconds after the first "go"), wait for all; what each reported."""
    env = worker_env(tmp_path / "pacing")
    workers = [Worker(sim, tmp_path, name, n, env) for name, n, _ in plan]
    try:
        for w in workers:
            assert w.line() == "ready"
        t0 = time.monotonic()
        for w, (_, _, after) in sorted(zip(workers, plan, strict=True), key=lambda p: p[1][2]):
            time.sleep(max(0.0, t0 + after - time.monotonic()))
            w.send("go")
        reports = {w.name: json.loads(w.line()) for w in workers}
        for w in workers:
            w.send("wait")
        for w in workers:
            reports[w.name].update(json.loads(w.line()))
            assert w.proc.wait(30) == 0
        return reports
    finally:
        for w in workers:
            w.stop()


def check_limits(sim) -> None:
    assert sim.count_429() == 0, (sim.count_429("createTask"), sim.count_429("recordInfo"),
                                  sim.max_in_window("createTask", 10.0), sim.max_in_window("recordInfo", 1.0))
    assert sim.max_in_window("createTask", 10.0) <= 20
    assert sim.max_in_window("recordInfo", 1.0) <= 10


def test_two_processes_of_one_account_send_30_each_within_the_limits_together(tmp_path):
    with Simulator(**FAST_SIM) as sim:  # the documented limits, enforced: 20 createTask / 10 s, 10 recordInfo / s
        reports = run_together(sim, tmp_path, [("alpha", 30, 0.0), ("beta", 30, 0.0)])
        for name, rep in reports.items():
            assert rep["errors"] == [] and len(set(rep["tasks"])) == 30 and None not in rep["tasks"], name
            assert max(rep["took"]) < 1.0, (name, max(rep["took"]))  # no submit waits for a slot
        assert len(sim.tasks) == 60
        check_limits(sim)
        creates = creates_by_worker(sim)
        first = {name: next(t for t, who in creates if who == name) for name in reports}
        start = min(t for t, _ in creates)
        print("first createTask after the first:", {n: round(t - start, 3) for n, t in first.items()},
              "submit max:", {n: round(max(r["took"]), 4) for n, r in reports.items()},
              "429:", sim.count_429(), "max create/10 s:", sim.max_in_window("createTask", 10.0),
              "max recordInfo/1 s:", sim.max_in_window("recordInfo", 1.0))
        assert max(first.values()) - start < 2.0  # both start sending at once: neither waits for the other


def test_a_third_process_gets_its_turn_while_another_sends_a_large_batch(tmp_path):
    with Simulator(**FAST_SIM) as sim:
        reports = run_together(sim, tmp_path, [("batch", 26, 0.0), ("cell", 4, 2.0), ("panel", 4, 2.0)])
        for name, rep in reports.items():
            assert rep["errors"] == [] and None not in rep["tasks"], name
            assert max(rep["took"]) < 1.0, (name, max(rep["took"]))
        check_limits(sim)
        creates = [who for _, who in creates_by_worker(sim)]
        print("order after the first 20:", creates[20:])
        assert creates[:20] == ["batch"] * 20  # the batch had the window to itself
        # then the slots go round in waiting order: the cells that came 2 s later are not left behind the whole
        # batch (unfair: first at index 26 and 27), each is served within the first four slots that free up
        assert creates.index("cell") <= 23 and creates.index("panel") <= 23, creates[20:]
        assert creates[20:].count("batch") == 6


def test_a_price_is_not_measured_while_a_neighbour_spends(tmp_path, monkeypatch):
    """Kernel B's createTask is slow to answer while kernel A (another process) creates two tasks: the balance
    fell by three tasks' credits, and the probe, seeing A's create slots in the shared state, measures nothing.
    Alone, the same probe measures the simulator's price (4 credits a task)."""
    pacing = tmp_path / "pacing"
    monkeypatch.setenv("IMAGEN4_PACING_DIR", str(pacing))
    with Simulator(cost_per_image=4.0, **FAST_SIM) as sim:
        session = Session(history=History(tmp_path / "b.jsonl"), client_options=dict(
            api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "images",
            limits=Limits()))
        neighbour = Worker(sim, tmp_path, "neighbour", 2, worker_env(pacing))
        try:
            assert neighbour.line() == "ready"
            sim.inject("createTask", times=1, delay=1.5)  # B's answer comes 1.5 s late (the task exists at once)
            job = session.submit(GenerationRequest.create("b alone?", model="fast"))
            deadline = time.monotonic() + 10
            while sim.count("createTask") < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            neighbour.send("go")  # A spends while B's createTask is on its way
            json.loads(neighbour.line())
            neighbour.send("wait")
            assert json.loads(neighbour.line())["errors"] == []
            assert job.wait(30) is not None and job.error is None
            assert sim.count("createTask") == 3
            assert session.probe.discarded == 1
            assert session.spending.prices.price("fast") == (4.0, False)  # still the estimate (list price 4)
            assert not [e for e in session.history.iter_events() if e["event"] == "cost"]
            assert job.cost == (4.0, False)
            # the control: alone, the probe measures (the model's first measurement)
            alone = session.submit(GenerationRequest.create("b alone", model="ultra"))
            alone.wait(30)
            assert session.spending.prices.price("ultra") == (4.0, True) and session.probe.discarded == 1
        finally:
            neighbour.stop()
            session.close()


def test_a_price_is_not_measured_while_a_kernel_elsewhere_sends_into_the_same_history(tmp_path, monkeypatch):
    """A neighbour on another machine (its own pacing state) sharing the notebook's folder: its `sending` in the
    history gives it away."""
    monkeypatch.setenv("IMAGEN4_PACING_DIR", str(tmp_path / "pacing-here"))
    with Simulator(cost_per_image=4.0, **FAST_SIM) as sim:
        session = Session(history=History(tmp_path / "shared.jsonl"), client_options=dict(
            api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "images",
            limits=Limits()))
        neighbour = Worker(sim, tmp_path, "shared", 1, worker_env(tmp_path / "pacing-elsewhere"))
        try:
            assert neighbour.line() == "ready"
            sim.inject("createTask", times=1, delay=1.5)
            job = session.submit(GenerationRequest.create("b here", model="fast"))
            deadline = time.monotonic() + 10
            while sim.count("createTask") < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            neighbour.send("go")
            json.loads(neighbour.line())
            neighbour.send("wait")
            assert json.loads(neighbour.line())["errors"] == []
            job.wait(30)
            assert job.error is None and sim.count("createTask") == 2
            assert session.probe.discarded == 1 and session.spending.prices.price("fast") == (4.0, False)
        finally:
            neighbour.stop()
            session.close()


def test_resume_leaves_a_live_owners_queue_alone_and_sends_it_once_its_lease_has_lapsed(sim, tmp_path):
    """The owner runs as "another host" (its own host identity), queues 3 requests under a create limit of one a
    minute: one leaves, two wait. Resume elsewhere sends nothing while its lease is held, nothing right after it
    is killed (another host: only the heartbeat tells, and it is fresh), and both, once, after the lapse."""
    env = worker_env(tmp_path / "pacing-owner", IMAGEN4_HOST_ID="another-host", IMAGEN4_LEASE_LAPSE="3")
    owner = Worker(sim, tmp_path, "owner", 3, env, "1", "60")
    history = History(tmp_path / "owner.jsonl")
    session = Session(history=history, client_options=dict(
        api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "images",
        limits=Limits.off()))
    try:
        assert owner.line() == "ready"
        owner.send("go")
        json.loads(owner.line())
        deadline = time.monotonic() + 10
        while (not any(e.succeeded for e in history.entries()) or history.unfinished()) and \
                time.monotonic() < deadline:
            time.sleep(0.01)  # owner 0 sent and finished: nothing but the queue to resume
        waiting = [ev for ev in history.waiting() if not ev.get("sending")]
        assert len(waiting) == 2 and len({ev["owner"] for ev in waiting}) == 1
        lease = tmp_path / "leases" / f"{waiting[0]['owner']}.json"
        assert json.loads(lease.read_text())["host"] == "another-host" and KEY not in lease.read_text()
        assert owner_state(waiting[0], tmp_path) == "alive"

        with pytest.warns(RuntimeWarning, match="2 queued request.*not sent"):
            assert session.resume() == []  # its lock is held: alive
        owner.proc.send_signal(signal.SIGKILL)
        owner.proc.wait(10)
        with pytest.warns(RuntimeWarning, match="not sent"):
            assert session.resume() == []  # the lock is free, but "another host": the fresh heartbeat decides
        assert sim.count("createTask") == 1

        time.sleep(3.5)  # the lease lapses
        assert owner_state(waiting[0], tmp_path) == "lapsed"
        resumed = session.resume()
        assert sorted(j.request.prompt for j in resumed) == ["owner 1", "owner 2"]
        session.wait_all(30)
        assert all(j.error is None and j.task_id for j in resumed)
        assert session.resume() == [] and history.waiting() == []
        assert sorted(t.prompt for t in sim.tasks.values()) == ["owner 0", "owner 1", "owner 2"]  # each once
    finally:
        owner.stop()
        session.close()


def test_a_lease_on_this_machine_lapses_as_soon_as_its_process_is_gone(tmp_path):
    """Same host identity: the free lock is the proof, no waiting for the heartbeat."""
    code = ("import sys, time\nfrom imagen4_jupyter.records.lease import hold_lease\n"
            "print(hold_lease(sys.argv[1]).name, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip() if proc.stdout else ""
        assert owner_state({"owner": name}, tmp_path) == "alive"
        proc.kill()
        proc.wait(10)
        assert owner_state({"owner": name}, tmp_path) == "lapsed"
        assert owner_state({"owner": "nobody-1-abc"}, tmp_path) == "unknown"  # no lease: in doubt
        assert owner_state({"pid": 1, "host": "h"}, tmp_path) == "unknown"  # an older event without an owner
        (tmp_path / "leases" / f"{name}.json").write_text("{torn")
        assert owner_state({"owner": name}, tmp_path) == "unknown"
    finally:
        proc.kill()


def test_the_shared_state_holds_no_key_and_costs_little_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEN4_PACING_DIR", str(tmp_path))
    from imagen4_jupyter.api.pacing import shared_pacer

    pacer = shared_pacer("http://127.0.0.1:9/neighbours", KEY, Limits())
    assert isinstance(pacer.create, SharedWindow) and pacer.try_create() == 0.0 and pacer.try_query() == 0.0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(KEY not in p.read_text() and KEY not in p.name for p in tmp_path.iterdir())
    window = SharedWindow(20, 10.0, tmp_path / "cost.json")
    taken = 0.0
    for _ in range(50):
        window.path.write_bytes(b"")
        t = time.perf_counter()
        for _ in range(20):
            assert window.try_take() == 0.0
        taken += time.perf_counter() - t
        assert window.try_take() > 9.0  # the 21st waits for the window
    per_slot = taken / 1000 * 1e6
    print(f"shared slot: {per_slot:.0f} us")
    assert per_slot < 5000
