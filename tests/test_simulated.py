"""Simulated is a fact, not a mode: the simulator says so on every answer (`X-Apikley-Simulator`), the client learns
it from each answer, and everything made there says simulated (the history's events, its table, the export, cards,
image and grid metadata, `%imagen4 credits`, `info`), while `%imagen4 spend` keeps simulated credits apart. A task
whose simulator is gone is closed in one line, at no cost, without asking for a key. The same in a real kernel,
across a restart: tests/test_kernel_service.py."""
# ruff: noqa: F811 - `ip`, the shell fixture of test_magics, is imported and used as a parameter
from __future__ import annotations

import csv
import json
import time

import pytest
import requests
from conftest import FAST_RETRY, KEY
from conftest import session_on as shared_session_on
from test_magics import ip, run  # noqa: F401

from imagen4_jupyter import GenerationRequest
from imagen4_jupyter.api import client as api_client
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.cards import card_bundle
from imagen4_jupyter.api.client import Imagen4Client
from imagen4_jupyter.api.spend import PriceBook
from imagen4_jupyter.notebook.outputs import history_bundle
from imagen4_jupyter.records.export import export_history
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.records.spend import spend_summary
from imagen4_jupyter.research.grids import prompt_seed_grid
from imagen4_jupyter.simulator import Simulator
from imagen4_jupyter.simulator import backend as sim_backend

HEADER = "X-Apikley-Simulator"
FAST = dict(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
            enforce_limits=False)


@pytest.fixture
def sim():
    """Overrides conftest's `sim` (which poses as the real service): this one says it is a simulator."""
    with Simulator(**FAST) as s:
        yield s


@pytest.fixture
def real():
    """A simulator posing as the real service (no header), as the other tests' fixtures do."""
    with Simulator(**FAST, announce=False) as s:
        yield s


def session_on(service, folder, history: History | None = None) -> Session:
    return shared_session_on(service, folder, history=history or History(folder / ".imagen4" / "history.jsonl"))


def said(r) -> str:
    """Everything a cell showed as text: stdout, stderr and its rich outputs' text/plain."""
    return r.text + "\n".join(o["data"].get("text/plain", "") for o in r.outputs)


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the simulator says so, the client knows ------------------------------------------------------------------
def test_both_sides_spell_the_header_the_same():
    assert api_client.SIMULATOR_HEADER == sim_backend.SIMULATOR_HEADER == HEADER


def test_every_answer_of_the_simulator_carries_the_header(sim):
    auth = {"Authorization": f"Bearer {KEY}"}
    url = sim.url + "/api/v1"
    created = requests.post(url + "/jobs/createTask", headers=auth,
                            json={"model": "google/imagen4-fast", "input": {"prompt": "a kite"}}, timeout=5)
    task_id = created.json()["data"]["taskId"]
    deadline = time.monotonic() + 10
    while (record := requests.get(url + "/jobs/recordInfo", params={"taskId": task_id}, headers=auth,
                                  timeout=5)).json()["data"]["state"] != "success":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    image_url = json.loads(record.json()["data"]["resultJson"])["resultUrls"][0]
    sim.inject("credit", code=429)
    sim.inject("recordInfo", http_status=502)
    answers = {
        "createTask": created, "recordInfo": record,
        "image": requests.get(image_url, timeout=5),
        "429": requests.get(url + "/chat/credit", headers=auth, timeout=5),
        "502 page": requests.get(url + "/jobs/recordInfo", params={"taskId": task_id}, headers=auth, timeout=5),
        "credit": requests.get(url + "/chat/credit", headers=auth, timeout=5),
        "bad key": requests.get(url + "/chat/credit", headers={"Authorization": "Bearer nope"}, timeout=5),
        "unknown task": requests.get(url + "/jobs/recordInfo", params={"taskId": "task_nope"}, headers=auth,
                                     timeout=5),
        "no task id": requests.get(url + "/jobs/recordInfo", headers=auth, timeout=5),
        "not JSON": requests.post(url + "/jobs/createTask", data=b"{", headers=auth, timeout=5),
        "unknown path": requests.get(sim.url + "/nope", timeout=5),
        "HEAD": requests.head(url + "/chat/credit", headers=auth, timeout=5),
    }
    assert answers["429"].json()["code"] == 429 and answers["502 page"].status_code == 502
    assert answers["image"].headers["Content-Type"] == "image/png"
    missing = [name for name, answer in answers.items() if answer.headers.get(HEADER) != "imagen4-jupyter"]
    assert missing == []


def test_a_simulator_posing_as_the_real_service_sends_no_header(real):
    answer = requests.get(real.url + "/api/v1/chat/credit", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert answer.status_code == 200 and HEADER not in answer.headers


def test_the_client_learns_it_from_every_answer_errors_included(sim, real, tmp_path):
    client = Imagen4Client(api_key="wrong-key", base_url=sim.url, retry=FAST_RETRY, cache_dir=tmp_path)
    try:
        assert client.simulated is None  # nothing answered yet
        with pytest.raises(E.AuthenticationError):
            client.credits()
        assert client.simulated is True  # an error answer says so too
    finally:
        client.close()
    with Imagen4Client(api_key=KEY, base_url=real.url, retry=FAST_RETRY, cache_dir=tmp_path) as client:
        client.credits()
        assert client.simulated is False
    with Imagen4Client(api_key=KEY, base_url=sim.url, retry=FAST_RETRY, cache_dir=tmp_path) as client:
        assert client.credits() > 0 and client.simulated is True


# -- everything made there says simulated ---------------------------------------------------------------------
def test_history_export_cards_and_spend_mark_what_a_simulator_made(sim, real, tmp_path):
    history = History(tmp_path / ".imagen4" / "history.jsonl")
    on_sim, on_real = session_on(sim, tmp_path, history), session_on(real, tmp_path, history)
    try:
        job = on_sim.submit(GenerationRequest.create("a paper crane", seed=1, model="fast"))
        job.result(20)
        paid = on_real.submit(GenerationRequest.create("a real crane", seed=2, model="fast"))
        paid.result(20)
    finally:
        on_sim.close()
        on_real.close()
    submitted = {e["task_id"]: e for e in events(history.path) if e["event"] == "submitted"}
    assert submitted[job.task_id]["simulated"] is True and submitted[job.task_id]["simulator"] == sim.url
    assert "simulated" not in submitted[paid.task_id] and "simulator" not in submitted[paid.task_id]
    assert on_sim.is_simulated(job.task_id) and not on_real.is_simulated(paid.task_id)

    table = history_bundle(history.search(), history, thumbnails=False)
    sim_line = next(ln for ln in table["text/plain"].splitlines() if job.task_id in ln)
    real_line = next(ln for ln in table["text/plain"].splitlines() if paid.task_id in ln)
    assert "(simulated)" in sim_line and "simulated" not in real_line
    assert table["text/html"].count("imagen4-simulated") == 1

    out = export_history(history, tmp_path / "tasks.csv")
    rows = {r["task_id"]: r for r in csv.DictReader(out.open())}
    assert rows[job.task_id]["simulated"] == "True" and rows[paid.task_id]["simulated"] == "False"

    card = card_bundle(job, simulated=True)
    assert "simulated" in card["text/plain"] and "imagen4-simulated" in card["text/html"]
    assert "simulated" not in card_bundle(paid)["text/plain"]

    real_cost, sim_cost = history.get(paid.task_id).credits, history.get(job.task_id).credits
    assert real_cost and sim_cost
    summary = spend_summary(history, PriceBook())
    assert (summary.tasks, summary.credits) == (1, real_cost)  # the real task only
    assert (summary.simulated_tasks, summary.simulated_credits) == (1, sim_cost)
    lines = summary.lines()
    assert lines[0].startswith(f"1 task created: {real_cost:g} credits")
    assert any(ln.startswith(f"simulated: 1 task made by a simulator, {sim_cost:g} simulated credits (not billed")
               for ln in lines)


def test_a_grid_made_on_a_simulator_says_so_in_its_metadata_and_file(sim, real, tmp_path):
    from imagen4_jupyter.api.provenance import read_provenance

    for service, expected in ((sim, True), (real, False)):
        session = session_on(service, tmp_path / service.url.rsplit(":", 1)[1])
        try:
            grid = prompt_seed_grid(["a fox"], [1, 2], model="fast", session=session, progress=False)
        finally:
            session.close()
        _, meta = grid._repr_mimebundle_()
        assert meta["imagen4"].get("simulated", False) is expected
        saved = read_provenance(grid.save(tmp_path / f"grid-{expected}.png"))
        assert saved.get("simulated", False) is expected


def test_a_later_session_knows_the_simulator_from_the_history_before_it_answers(sim, tmp_path):
    """Seeded reuse on a simulator reached by APIKLEY_BASE_URL works across kernels: the history names the URL."""
    first = session_on(sim, tmp_path)
    try:
        request = GenerationRequest.create("a kite", seed=3, model="fast")
        first.submit(request).result(20)
    finally:
        first.close()
    later = Session(history=History(first.history.path),
                    client_options=dict(api_key=KEY, base_url=sim.url, cache_dir=tmp_path / "images"))
    try:
        assert later.simulated  # before any answer: the history knows this URL for a simulator's
        assert later.find_reusable(request) is not None
    finally:
        later.close()


# -- the magic --------------------------------------------------------------------------------------------------
def test_the_magic_marks_a_simulator_reached_through_the_environment(ip, sim):
    r = run(ip, "%%imagen4 --wait -m fast -s 5\na glass hare")
    assert r.result.error_in_exec is None, r.text
    assert r.images() and all(i["metadata"]["imagen4"]["simulated"] is True for i in r.images())
    cards = [o["data"] for o in r.outputs if "imagen4-card" in o["data"].get("text/html", "")]
    assert cards and all("imagen4-simulated" in c["text/html"] for c in cards[-1:])
    info = run(ip, "%imagen4 info").cap.stdout
    assert f"a simulator at {sim.url}" in info and "simulated" in info
    task_id = r.images()[0]["metadata"]["imagen4"]["task_id"]
    status = said(run(ip, f"%imagen4 status {task_id}"))
    assert "state: success" in status and "service: a simulator (simulated" in status
    credits = said(run(ip, "%imagen4 credits"))
    assert "Remaining credits:" in credits and "(simulated)" in credits
    if_no_key = said(run(ip, "%imagen4 simulator --if-no-key"))
    assert f"Using a simulator at {sim.url}" in if_no_key and "real service" not in if_no_key
    spend = said(run(ip, "%imagen4 spend"))
    assert "0 tasks created: 0 credits" in spend and "simulated: 1 task made by a simulator" in spend


def test_the_magic_says_the_real_service_when_it_does_not_answer_as_a_simulator(ip, real, monkeypatch):
    monkeypatch.setenv("APIKLEY_BASE_URL", real.url)
    text = said(run(ip, "%imagen4 simulator --if-no-key"))
    assert "Using the real service" in text
    assert "simulator at" not in run(ip, "%imagen4 info").cap.stdout
    assert "(simulated)" not in said(run(ip, "%imagen4 credits"))


# -- a task whose simulator is gone ---------------------------------------------------------------------------
def dead_kernels_task(ip, tmp_path) -> tuple[str, str, int]:
    """What a kernel that died with its simulator leaves: a simulated task submitted, unfinished. Returns (task
    id, the simulator's URL, its port)."""
    path = ip.imagen4.session.history.path
    with Simulator(**{**FAST, "generation_time": (30.0, 30.0)}) as gone:
        old = session_on(gone, tmp_path / "old", History(path))
        job = old.submit(GenerationRequest.create("a lost moth", seed=9, model="fast"))
        deadline = time.monotonic() + 10
        while not any(e["event"] == "state" for e in events(path)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        left = path.read_bytes()  # what the dead kernel had written
        old.client.poller.stop()
        url = gone.url
        port = int(url.rsplit(":", 1)[1])
    old.close()
    path.write_bytes(left)
    return job.task_id, url, port


@pytest.mark.parametrize("after", ["nothing listens", "a new simulator on its port"])
def test_resuming_a_task_whose_simulator_is_gone_says_one_line_and_costs_nothing(ip, sim, tmp_path, monkeypatch,
                                                                              after):
    task_id, url, port = dead_kernels_task(ip, tmp_path)
    assert ip.imagen4.session.history.unfinished()[0].task_id == task_id
    if after == "nothing listens":  # and no key: nothing may ask for one
        monkeypatch.delenv("APIKLEY_API_KEY")
        newcomer = None
    else:  # the service in force answers 422 "recordInfo is null" for it
        newcomer = Simulator(**FAST, port=port).start()
        monkeypatch.setenv("APIKLEY_BASE_URL", newcomer.url)
    try:
        seen = len(sim.requests)
        r = run(ip, "%imagen4 resume")
        assert r.result.error_in_exec is None, r.text
        lines = [ln for ln in said(r).splitlines() if task_id in ln]
        assert len(lines) == 1 and f"made on a simulator at {url}" in lines[0], said(r)
        assert "nothing was charged" in lines[0] and "real service" not in said(r)
        if after == "nothing listens":
            assert "no longer running" in lines[0]
        last = [e for e in events(ip.imagen4.session.history.path) if e.get("task_id") == task_id][-1]
        assert last["event"] == "failed" and last["kind"] == "SimulatorGone" and last["final"] is True
        assert last["simulated"] is True
        assert ip.imagen4.session.history.unfinished() == []
        assert "Nothing to resume" in said(run(ip, "%imagen4 resume"))  # not offered again
        status = run(ip, f"%imagen4 status {task_id}")
        assert status.result.error_in_exec is None and "made on a simulator" in said(status)
        spend = spend_summary(ip.imagen4.session.history, PriceBook())
        assert (spend.tasks, spend.credits, spend.simulated_tasks) == (0, 0.0, 0)
        assert "0 tasks created: 0 credits" in said(run(ip, "%imagen4 spend"))
        assert len(sim.requests) == seen  # nothing went to any other service
        if newcomer is not None:
            assert [r.endpoint for r in newcomer.requests if r.endpoint != "credit"] == ["recordInfo"]
    finally:
        if newcomer is not None:
            newcomer.stop()


def test_a_simulated_task_whose_simulator_is_still_there_is_resumed_as_usual(sim, tmp_path):
    """The simulator (reached by its URL, not started in the kernel) outlived the kernel: resume follows the task."""
    path = tmp_path / ".imagen4" / "history.jsonl"
    sim.generation_time = (0.5, 0.5)
    old = session_on(sim, tmp_path, History(path))
    job = old.submit(GenerationRequest.create("a patient heron", seed=8, model="fast"), queue=False)
    left = path.read_bytes()
    old.client.poller.stop()
    old.close()
    path.write_bytes(left)  # what the dead kernel had written: submitted, nothing after
    new = session_on(sim, tmp_path, History(path))  # a new client: it has not heard the simulator yet
    try:
        resumed = new.resume()
        assert [j.task_id for j in resumed] == [job.task_id]
        assert resumed[0].result(20).images and new.history.get(job.task_id).succeeded
        assert new.is_simulated(job.task_id)
    finally:
        new.close()
