"""The first hour in real kernels against the simulator: -m per model (the exact bodies), no key then a key set
in a cell (no restart), a .env beside the notebook, %imagen4 key through the kernel's stdin (masked), the first
interactive cell's own prompt, and %imagen4 simulator / --stop."""
from __future__ import annotations

import json
import queue
import re
import time
from pathlib import Path

import nbformat
import pytest
from conftest import KEY
from kernel_util import FAST_CONFIG, Execution, Kernel, image_outputs, kernel_env, make_notebook, run_notebook
from secrets_guard import watch

from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel
DOTENV_KEY = watch("dotenv-key-5f3a9c1e7b")  # only ever in the .env file this test writes (and removes)
HANDED_KEY = watch("handed-key-0c8e2d4f6a")  # reaches a kernel through an environment variable other than the key's


@pytest.fixture(scope="module")
def ksim():
    with Simulator(api_keys=(KEY, DOTENV_KEY, HANDED_KEY), queue_time=(0.0, 0.02), generation_time=(0.05, 0.1),
                   image_scale=0.0625, announce=False) as s:  # stands for the real service (no simulator header)
        yield s


def creates(sim) -> list[dict]:
    return [json.loads(r.body) for r in sim.requests if r.endpoint == "createTask"]


def start(ksim, folder: Path, *, key: str | None = KEY, **extra: str) -> Kernel:
    (folder / "work").mkdir(parents=True, exist_ok=True)
    env = kernel_env(ksim.url, key or "", folder / "ipython")
    if key is None:
        env.pop("APIKLEY_API_KEY")
    env.update(extra)
    return Kernel(folder / "work", env)


def answering(k: Kernel, code: str, answer: str, timeout: float = 60) -> tuple[Execution, list[dict]]:
    """Run a cell as an interactive front-end that answers every input request with `answer`; returns the
    execution and the input requests' contents (prompt, password)."""
    msg_id = k.kc.execute(code, allow_stdin=True, stop_on_error=False)
    asked, reply, t0 = [], None, time.monotonic()
    while reply is None:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(code)
        try:
            msg = k.kc.get_stdin_msg(timeout=0.05)
            if msg["msg_type"] == "input_request":
                asked.append(msg["content"])
                k.kc.input(answer)
        except queue.Empty:
            pass
        try:
            msg = k.kc.get_shell_msg(timeout=0.05)
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg
        except queue.Empty:
            pass
    k.wait_for(lambda ms: any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                              and m["parent_header"].get("msg_id") == msg_id for m in ms), timeout=30)
    mine = [m for m in k.messages if m["parent_header"].get("msg_id") == msg_id]
    return Execution(msg_id, reply, mine, time.monotonic() - t0), asked


def one_line_error(ex: Execution, *needles: str) -> None:
    assert not ex.ok, ex.text()
    text = ex.error_text
    assert "Traceback" not in text and len(text.strip().splitlines()) <= 2, text
    for needle in needles:
        assert needle in text, text


def shown_images(k: Kernel, ex: Execution) -> list[dict]:
    """The image messages of a cell: its own outputs and the updates of its display ids."""
    seen = {m["header"]["msg_id"]: m for m in ex.messages + k.updates_for(ex.display_ids())}
    return [m for m in seen.values() if m["msg_type"] in ("display_data", "update_display_data")
            and {"image/png", "image/jpeg"} & set(m["content"]["data"])]


NO_KEY = ("No API key", "APIKLEY_API_KEY", ".env", "%imagen4 key", "%imagen4 simulator")


def test_model_flag_in_a_kernel_sends_each_models_exact_body(ksim, tmp_path):
    k = start(ksim, tmp_path)
    try:
        assert k.execute("%load_ext imagen4_jupyter").ok and k.execute(FAST_CONFIG).ok
        n = len(creates(ksim))
        for cell in ("%%imagen4 --wait -s 7\na tin robot", "%%imagen4 --wait -m fast -s 7 -n 2\na tin robot",
                     "%%imagen4 --wait -m ultra -s 7\na tin robot",
                     "%%imagen4 --wait -m google/imagen4-ultra -a 4:3\na tin robot"):
            ex = k.execute(cell, allow_stdin=False)
            assert ex.ok, ex.text()
        assert creates(ksim)[n:] == [
            {"model": "google/imagen4", "input": {"prompt": "a tin robot", "aspect_ratio": "1:1", "num_images": "1",
                                                  "seed": "7"}},
            {"model": "google/imagen4-fast", "input": {"prompt": "a tin robot", "aspect_ratio": "16:9",
                                                       "num_images": "2", "seed": 7}},
            {"model": "google/imagen4-ultra", "input": {"prompt": "a tin robot", "aspect_ratio": "1:1", "seed": "7"}},
            {"model": "google/imagen4-ultra", "input": {"prompt": "a tin robot", "aspect_ratio": "4:3"}}]
        for cell, needle in (("%%imagen4 -m ultra -n 2\nx", "makes one image per task"),
                             ("%%imagen4 -m fast -s seven\nx", "takes a whole-number seed")):
            one_line_error(k.execute(cell, allow_stdin=False), needle)
        assert len(creates(ksim)) == n + 4  # the refused cells sent nothing
    finally:
        k.close()


def test_no_key_then_os_environ_in_a_cell_works_without_restart(ksim, tmp_path):
    k = start(ksim, tmp_path, key=None, HANDED=HANDED_KEY)
    try:
        load = k.execute("%load_ext imagen4_jupyter")
        assert load.ok and "no key" in load.stdout and "Apikley at" in load.stdout, load.text()
        assert k.execute(FAST_CONFIG).ok
        n = ksim.count("createTask")
        # interactive: the first cell that needs a key offers the masked prompt (nothing typed: the error)
        ex, asked = answering(k, "%%imagen4 --wait\na glass bird", "")
        assert [a["password"] for a in asked] == [True] and "API key" in asked[0]["prompt"]
        one_line_error(ex, *NO_KEY)
        ex, asked = answering(k, "%%imagen4 --wait\na glass bird", "")  # offered once only
        assert asked == []
        one_line_error(ex, *NO_KEY)
        one_line_error(k.execute("%%imagen4\na glass bird", allow_stdin=False), *NO_KEY)  # headless: no prompt
        assert ksim.count("createTask") == n
        assert k.execute("import os; os.environ['APIKLEY_API_KEY'] = os.environ.pop('HANDED')").ok
        ex = k.execute("%%imagen4\na glass bird", allow_stdin=False)
        assert ex.ok, ex.text()
        assert ksim.count("createTask") == n + 1
        assert len(shown_images(k, ex)) == 1
        info = k.execute("%imagen4 info").stdout
        assert "key set (from APIKLEY_API_KEY)" in info and HANDED_KEY not in info
    finally:
        k.close()


def test_imagen4_key_asks_through_stdin_and_headless_gets_every_way(ksim, tmp_path):
    k = start(ksim, tmp_path, key=None)
    try:
        assert k.execute("%load_ext imagen4_jupyter").ok and k.execute(FAST_CONFIG).ok
        one_line_error(k.execute("%imagen4 key", allow_stdin=False), "cannot ask for the key", *NO_KEY)
        ex, asked = answering(k, "%imagen4 key", KEY)
        assert ex.ok, ex.text()
        assert [a["password"] for a in asked] == [True]  # masked
        assert "Key kept in memory" in ex.text() and KEY not in json.dumps(ex.messages, default=str)
        info = k.execute("%imagen4 info").stdout
        assert "key set (from %imagen4 key)" in info
        ex = k.execute("%%imagen4 --wait -s 4\na typed-key owl", allow_stdin=False)
        assert ex.ok, ex.text()
        assert len(shown_images(k, ex)) == 1
        hist = tmp_path / "work" / ".imagen4"
        files = [p for p in [*hist.rglob("*"), *(tmp_path / "ipython").rglob("*")] if p.is_file()]
        assert any(p.suffix == ".jsonl" for p in files)  # the history is among what is searched
        for path in files:
            assert KEY.encode() not in path.read_bytes(), path
    finally:
        k.close()


def test_a_dotenv_beside_the_notebook_and_the_key_nowhere_else(ksim, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    dotenv = work / ".env"
    dotenv.write_text(f"APIKLEY_API_KEY={DOTENV_KEY}\n")
    env = kernel_env(ksim.url, "", tmp_path / "ipython")
    env.pop("APIKLEY_API_KEY")
    try:
        nb = make_notebook(["%load_ext imagen4_jupyter", FAST_CONFIG, "%%imagen4 -s 9\na dotenv heron",
                            "%imagen4 info"])
        n = ksim.count("createTask")
        run_notebook(nb, work, env)
        nbformat.write(nb, work / "run.ipynb")
        assert ksim.count("createTask") == n + 1
        assert len(image_outputs(nb.cells[2].outputs)) == 1
        info = "".join(o.get("text", "") for o in nb.cells[3].outputs)
        assert f"key set (from .env at {dotenv.resolve()})" in info, info
        hits = [p for p in [*work.rglob("*"), *(tmp_path / "ipython").rglob("*")]
                if p.is_file() and p != dotenv and DOTENV_KEY.encode() in p.read_bytes()]
        assert hits == [] and (work / ".imagen4").is_dir()
    finally:
        dotenv.unlink()


def test_simulator_in_a_kernel_says_simulated_and_stop_goes_back(ksim, tmp_path):
    k = start(ksim, tmp_path)
    try:
        assert k.execute("%load_ext imagen4_jupyter").ok and k.execute(FAST_CONFIG).ok
        n = ksim.count()
        started = k.execute("%imagen4 simulator")
        assert started.ok and "the simulator at http://127.0.0.1:" in started.text(), started.text()
        ex = k.execute("%%imagen4 --wait -m ultra -s 2\na simulated harbour", allow_stdin=False, timeout=90)
        assert ex.ok, ex.text()
        images = shown_images(k, ex)
        assert len(images) == 1 and all(m["content"]["metadata"]["imagen4"]["simulated"] is True for m in images)
        cards = [m["content"]["data"] for m in ex.messages + k.updates_for(ex.display_ids())
                 if "imagen4-card" in m["content"].get("data", {}).get("text/html", "")]
        assert cards and all("simulated: made by a simulator" in c["text/plain"] for c in cards)
        assert ksim.count() == n  # nothing reached the service
        events = [json.loads(x) for x in (tmp_path / "work" / ".imagen4" / "history.jsonl").read_text().splitlines()]
        assert [e.get("simulated") for e in events if e["event"] == "submitted"] == [True]
        everything = json.dumps(k.messages, default=str)
        assert not re.search(r"sim-[A-Za-z0-9_-]{20,}", everything)  # the simulator's key is never shown
        stopped = k.execute("%imagen4 simulator --stop")
        assert stopped.ok and f"Apikley at {ksim.url}" in stopped.text(), stopped.text()
        ex = k.execute("%%imagen4 --wait -m ultra -s 2\na simulated harbour", allow_stdin=False)
        assert ex.ok, ex.text()
        assert ksim.count() > n and creates(ksim)[-1]["input"]["prompt"] == "a simulated harbour"  # not reused
        real = json.dumps([m["content"] for m in ex.messages + k.updates_for(ex.display_ids())])
        assert "imagen4-simulated" not in real and '"simulated"' not in real and "made by %imagen4" not in real
    finally:
        k.close()


def test_a_restart_with_a_simulated_task_in_flight_then_resume_says_its_simulator_ended(ksim, tmp_path):
    """The in-kernel simulator ends with its kernel: in the new kernel, resume says so in one line, asks no key (a
    headless front-end could not answer), charges nothing, and the task is not offered again."""
    history = tmp_path / "work" / ".imagen4" / "history.jsonl"
    k = start(ksim, tmp_path, key=None)
    try:
        assert k.execute("%load_ext imagen4_jupyter").ok and k.execute("%imagen4 simulator").ok
        ex = k.execute("%%imagen4 --no-wait -m fast -s 4\na moth that never lands", allow_stdin=False)
        assert ex.ok, ex.text()
        submitted = [e for e in map(json.loads, history.read_text().splitlines()) if e["event"] == "submitted"]
        assert len(submitted) == 1 and submitted[0]["simulated"] is True
        task_id, url = submitted[0]["task_id"], submitted[0]["simulator"]
    finally:
        k.close()  # the restart: the kernel, and its simulator, end with the task still running
    assert not any(e.get("event") in ("succeeded", "failed") for e in map(json.loads, history.read_text().splitlines()))
    n = ksim.count()
    k = start(ksim, tmp_path, key=None)
    try:
        assert k.execute("%load_ext imagen4_jupyter").ok
        ex = k.execute("%imagen4 resume", allow_stdin=False)
        assert ex.ok, ex.text()
        lines = [ln for ln in ex.text().splitlines() if task_id in ln]
        assert len(lines) == 1, ex.text()
        assert f"made on a simulator at {url} that is no longer running" in lines[0]
        assert "nothing was charged" in lines[0] and "key" not in ex.text().lower()
        last = [e for e in map(json.loads, history.read_text().splitlines()) if e.get("task_id") == task_id][-1]
        assert (last["event"], last["kind"], last["simulated"]) == ("failed", "SimulatorGone", True) and last["final"]
        spend = k.execute("%imagen4 spend")
        assert spend.ok and "0 tasks created: 0 credits" in spend.text(), spend.text()
        again = k.execute("%imagen4 resume", allow_stdin=False)
        assert again.ok and "Nothing to resume" in again.text() and task_id not in again.text(), again.text()
        status = k.execute(f"%imagen4 status {task_id}", allow_stdin=False)
        assert status.ok and f"made on a simulator at {url}" in status.text(), status.text()
        assert ksim.count() == n  # nothing reached the service in force
    finally:
        k.close()
