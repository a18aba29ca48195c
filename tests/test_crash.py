"""Crashes: SIGKILL a real kernel with 20 tasks in flight, then `%imagen4 resume` in a new kernel.

Kill points: during submit (the kernel is inside `Session.submit`, backing off after a 429), during
polling, during downloads (made slow by the simulator), and in the middle of a burst of history writes
(plus a torn last line, which SIGKILL itself cannot produce on Linux: a write() either happens or not).
Each time: every task the simulator created ends `success` in the history with its image on disk, resume
sends no createTask, no task id is submitted twice, and the history loads; the file is only appended to.

Also: two kernels on one notebook (one interactive, one headless through nbclient) keep one consistent
history; and processes SIGKILLed while appending leave only whole lines (or one torn last line).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import nbformat
import pytest
from kernel_util import FAST_CONFIG, Kernel, image_outputs, kernel_env, make_notebook, run_notebook, wait_until
from reliability_util import KERNEL_KEY, REPO, write_figures

from imagen4_jupyter.records.history import History
from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel
N = 20
FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module")
def csim():
    with Simulator(api_keys=(KERNEL_KEY,), queue_time=(0.0, 0.02), generation_time=(0.05, 0.1),
                   image_scale=0.0625) as s:
        yield s
    if FIGURES:
        write_figures("crash", FIGURES)


@pytest.fixture
def fresh(csim):
    csim.clear_faults()
    csim.next_outcomes.clear()
    csim.queue_time, csim.generation_time = (0.0, 0.02), (0.05, 0.1)
    yield csim
    csim.clear_faults()
    csim.queue_time, csim.generation_time = (0.0, 0.02), (0.05, 0.1)


def start(cwd: Path, env: dict) -> Kernel:
    k = Kernel(cwd, env)
    load = k.execute("%load_ext imagen4_jupyter")
    assert load.ok, load.text()
    assert k.execute(FAST_CONFIG).ok
    k.load_text = load.stdout
    return k


def submit_loop(tag: str, n: int, first_seed: int = 0) -> str:
    """One cell that submits `n` tasks back to back (like running n cells), none waiting."""
    return (f"for _i in range({n}):\n"
            f"    get_ipython().run_cell_magic('imagen4', f'--no-wait -s {{{first_seed} + _i}}', "
            f"f'crash {tag} {{_i}}')")


def events(path: Path) -> list[dict]:
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            pass
    return out



def save_outputs(kernel: Kernel, path: Path) -> None:
    """Keep what the kernel showed (text parts) for the end-of-run secrets scan (secrets_guard.py)."""
    keep = [{"type": m["msg_type"], "content": {k: v for k, v in m["content"].items() if k != "data"},
             "text": {k: v for k, v in (m["content"].get("data") or {}).items() if k.startswith("text/")}}
            for m in kernel.messages]
    with open(path, "a") as fh:
        fh.write(json.dumps(keep, default=str) + "\n")


@pytest.mark.parametrize("point", ["submit", "polling", "download", "history-write"])
def test_sigkill_with_20_in_flight_then_resume_recovers_all(fresh, tmp_path, point):
    sim = fresh
    cwd = tmp_path / "nb"
    cwd.mkdir()
    env = kernel_env(sim.url, KERNEL_KEY, tmp_path / "ipython")
    hist_path = cwd / ".imagen4" / "history.jsonl"
    before = set(sim.tasks)
    checks0, images0 = sim.count("recordInfo"), sim.count("image")  # the simulator serves the whole module
    t0 = time.monotonic()
    torn = False

    k = start(cwd, env)
    try:
        if point == "submit":  # 20 in flight, then killed inside Session.submit of the next cell
            sim.generation_time = 2.0
            assert k.execute(submit_loop(point, N)).ok  # the cells return at once: the sender sends them
            wait_until(lambda: len(set(sim.tasks) - before) >= N, what="20 tasks created")
            fault = sim.inject("createTask", times=1, code=429, retry_after=30)
            k.kc.execute(submit_loop(point, 5, first_seed=100))
            wait_until(lambda: fault.hits == 1, what="the createTask that is answered 429")
            time.sleep(0.05)  # now waiting out the 429's pause in the sender's queue, with the 4 after it
        elif point == "polling":
            sim.generation_time = 2.0
            assert k.execute(submit_loop(point, N)).ok
            wait_until(lambda: len(set(sim.tasks) - before) >= N, what="20 tasks created")
            wait_until(lambda: sim.count("recordInfo") >= checks0 + N, what="status checks")
        elif point == "download":
            sim.inject("image", times=None, delay=1.5)
            assert k.execute(submit_loop(point, N)).ok
            wait_until(lambda: len(set(sim.tasks) - before) >= N, what="20 tasks created")
            wait_until(lambda: sim.count("image") >= images0 + 3, what="downloads under way")
        else:  # a burst of history writes: 20 `submitted` lines and the poller's state changes
            sim.queue_time, sim.generation_time = (0.05, 0.3), (0.3, 0.6)
            k.kc.execute(submit_loop(point, N))
            wait_until(lambda: hist_path.exists() and hist_path.read_bytes().count(b'"event":"submitted"') >= N,
                       what="20 submitted lines")
        save_outputs(k, tmp_path / "kernel-outputs.jsonl")
    finally:
        k.kill()
    killed_at = time.monotonic() - t0
    sim.clear_faults()
    created = set(sim.tasks) - before
    creates = sim.count("createTask")
    assert len(created) == N, (point, len(created))
    if point == "history-write":  # what a power cut mid-write leaves: half a line, no newline
        with open(hist_path, "ab") as fh:
            fh.write(b'{"v":1,"time":1.0,"event":"state","task_id":"task_go')
        torn = True
    on_disk = hist_path.read_bytes()
    evs = events(hist_path)
    submitted = [e["task_id"] for e in evs if e["event"] == "submitted"]
    assert set(submitted) == created and len(submitted) == N  # written before polling started
    done_before = {e["task_id"] for e in evs if e["event"] == "succeeded"}
    if point == "download":  # the service said success, the images were not stored: resume must download
        assert any(e["event"] == "state" and e["state"] == "success" for e in evs)
    unfinished = N - len(done_before)

    k2 = start(cwd, env)
    try:
        if unfinished:
            assert f"{unfinished} unfinished task(s) — run %imagen4 resume" in k2.load_text, k2.load_text
        resume = k2.execute("%imagen4 resume")
        assert resume.ok and f"Resuming {unfinished} unfinished task(s)" in resume.text(), resume.text()
        wait = k2.execute("%imagen4 wait --timeout 60", timeout=90)  # some may have finished already
        assert wait.ok and "failed" not in wait.text() and "Timed out" not in wait.text(), wait.text()
        assert "0 pending" in k2.execute("from imagen4_jupyter import get_session\n"
                                         "print(len(get_session().pending()), 'pending')").stdout
        save_outputs(k2, tmp_path / "kernel-outputs.jsonl")
    finally:
        k2.close()

    # resume created nothing for the tasks; killed while the next cells' 5 requests waited in the sender's queue
    # (the first in its 429 pause), none had been created (their `queued` events say so), so resume sends each
    # of them, once (which may meet a 429 of its own: the account's create window still holds the first kernel's)
    resent = 5 if point == "submit" else 0
    assert len(set(sim.tasks) - before) == N + resent
    if resent:
        assert "5 request(s) a stopped kernel had not sent yet: sent now" in resume.text()
        created = set(sim.tasks) - before
    else:
        assert sim.count("createTask") == creates
    after = hist_path.read_bytes()
    assert after.startswith(on_disk)  # only appended to, never rewritten
    evs = events(hist_path)
    submitted = Counter(e["task_id"] for e in evs if e["event"] == "submitted")
    assert set(submitted) == created and max(submitted.values()) == 1  # none twice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = History(hist_path)
        entries = {e.task_id: e for e in history.entries()}
    assert history.bad_lines == (1 if torn else 0)
    assert len([w for w in caught if "unreadable line" in str(w.message)]) == (1 if torn else 0)
    recovered = 0
    for tid in created:
        entry = entries[tid]
        assert entry.state == "success" and entry.succeeded and entry.images, (tid, entry.state)
        assert all(history.resolve(im["path"]).is_file() for im in entry.images)
        recovered += 1
    assert recovered == N + resent
    assert KERNEL_KEY.encode() not in after
    FIGURES[point] = {"in_flight": N, "created": len(created), "recovered": recovered,
                      "unfinished_at_kill": unfinished, "created_twice": 0,
                      "createTask_sent_by_resume": sim.count("createTask") - creates,  # 5 at "submit": never sent
                      "torn_line_skipped": torn, "killed_after_s": round(killed_at, 2),
                      "seconds": round(time.monotonic() - t0, 2)}


def test_two_kernels_on_one_notebook_keep_one_consistent_history(fresh, tmp_path):
    sim = fresh
    cwd = tmp_path / "shared"
    cwd.mkdir()
    env = kernel_env(sim.url, KERNEL_KEY, tmp_path / "ipython")
    sim.generation_time = (0.3, 0.8)
    config = "%config Imagen4Magics.notebook = 'shared.ipynb'"
    hist_path = cwd / ".imagen4" / "shared.jsonl"
    before = set(sim.tasks)
    t0 = time.monotonic()
    a = start(cwd, env)
    try:
        assert a.execute(config).ok
        assert a.execute(submit_loop("kernel-a", 10)).ok  # A's tasks run while B works
        cells = ["%load_ext imagen4_jupyter", FAST_CONFIG, config,
                 "for _i in range(10):\n"
                 "    get_ipython().run_cell_magic('imagen4', f'--wait -s {1000 + _i}', f'kernel b {_i}')",
                 "import time\nfrom imagen4_jupyter import get_session\nh = get_session().history\n"
                 "deadline = time.monotonic() + 30\n"
                 "while sum(e.succeeded for e in h.entries()) < 20 and time.monotonic() < deadline:\n"
                 "    time.sleep(0.05)\n"
                 "print('B sees', len(h.entries()), 'tasks,', sum(e.succeeded for e in h.entries()), 'succeeded')"]
        nb = run_notebook(make_notebook(cells), cwd, env)
        nbformat.write(nb, cwd / "shared.ipynb")  # the executed notebook, as nbconvert would save it
        assert a.execute("%imagen4 wait --timeout 60", timeout=90).ok
        seen_by_a = a.execute("from imagen4_jupyter import get_session\nh = get_session().history\n"
                              "print('A sees', len(h.entries()), 'tasks,', sum(e.succeeded for e in h.entries()),"
                              " 'succeeded,', h.bad_lines, 'bad')")
        save_outputs(a, tmp_path / "kernel-outputs.jsonl")
    finally:
        a.close()
    assert "A sees 20 tasks, 20 succeeded, 0 bad" in seen_by_a.stdout, seen_by_a.text()
    assert "B sees 20 tasks, 20 succeeded" in nb.cells[4].outputs[0]["text"]
    assert sum(len(image_outputs(c.outputs)) for c in nb.cells) == 10  # B's images are in the saved notebook
    created = set(sim.tasks) - before
    lines = hist_path.read_bytes().splitlines()
    evs = [json.loads(x) for x in lines]  # every line is a whole JSON record
    kinds = Counter(e["event"] for e in evs)
    submitted = Counter(e["task_id"] for e in evs if e["event"] == "submitted")
    succeeded = Counter(e["task_id"] for e in evs if e["event"] == "succeeded")
    assert len(created) == 20 and set(submitted) == created == set(succeeded)
    assert max(submitted.values()) == 1 and max(succeeded.values()) == 1
    FIGURES["two-kernels"] = {"kernels": 2, "tasks": len(created), "lines": len(lines),
                              "events": dict(kinds), "bad_lines": 0, "lost": 0, "duplicated": 0,
                              "seconds": round(time.monotonic() - t0, 2)}


WRITER = """
import sys
from imagen4_jupyter.records.history import History
h = History(sys.argv[1])
i = 0
while True:
    h.append({"event": "state", "task_id": f"task_w{sys.argv[2]}_{i}", "state": "generating", "pad": "x" * 300})
    i += 1
"""


def test_sigkill_during_history_appends_leaves_whole_lines(tmp_path):
    """Writers killed at random moments while appending: every line but possibly the last is whole,
    the next append starts on a new line, and the history loads."""
    path = tmp_path / ".imagen4" / "h.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    kills = 0
    for round_ in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"{round_}{n}"], env=env)
                 for n in range(2)]
        size = 300_000 * (round_ + 1)
        wait_until(lambda size=size: path.exists() and path.stat().st_size > size, what="appends")
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            kills += 1
        History(path).append({"event": "credits", "credits": round_})  # the next writer after the crash
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    bad = 0
    for line in lines[:-1]:
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    assert bad <= 3  # at most one torn line per crash (in practice none: write() is not torn by SIGKILL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = History(path)
        n = len(h.entries())
    assert h.bad_lines == bad and n == len(lines) - 1 - bad - 3  # every whole state line is a task
    FIGURES["killed-writers"] = {"kills": kills, "lines": len(lines) - 1, "torn_lines": bad}
