"""The soak's quick form (benchmarks/soak.py): 40 tasks through a Session and generate_many with the documented
limits on and 10% of requests meeting a random fault from the simulator's whole catalogue; nothing lost, nothing
created twice, every failure named, the history's books complete. The full run (1,000 tasks) is
`python -m benchmarks.soak`; its figures are in docs/reliability.md ("Soak")."""
from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import requests
from conftest import FAST_POLL, FAST_RETRY, KEY

from imagen4_jupyter import Imagen4Client, generate_many
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator.faults import CODE_MESSAGES, KINDS

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ lives beside the package, not in it
    sys.path.insert(0, str(REPO))
soak = importlib.import_module("benchmarks.soak")

SEED = int(os.environ.get("IMAGEN4_SOAK_SEED", "11"))


def test_the_catalogue_draws_every_fault_kind_and_body_code_of_the_simulator():
    assert soak.catalogue_gaps() == []
    drawn = {k for table in soak.FAULTS.values() for opts in table.values() for k in opts}
    assert set(KINDS) - {"html"} <= drawn and "http_status" in drawn
    for endpoint in ("createTask", "recordInfo"):
        assert {o["code"] for o in soak.FAULTS[endpoint].values() if "code" in o} == set(CODE_MESSAGES)


def test_quick_soak_loses_nothing_and_creates_nothing_twice(tmp_path, capsys):
    t = time.monotonic()
    report = soak.run(40, SEED, 0.10, 8, tmp_path, guard=200.0)
    seconds = time.monotonic() - t
    with capsys.disabled():
        print(f"\nsoak quick, seed {SEED} (IMAGEN4_SOAK_SEED={SEED} to rerun):")
        soak.show(report)
    f = report["figures"]
    assert report["ok"], f"seed {SEED}: {report['problems']}"
    assert f["lost"] == 0 and f["duplicates"] == 0
    assert sum(f["outcomes"].values()) == 40 and set(f["outcomes"]) <= set(soak.ENDED)
    assert f["faults injected"] > 0 and sum(f["faults by kind"].values()) == f["faults injected"]
    # every task was created under the limits (429s are answers, not tasks) and every request is on the books
    assert f["requests"]["createTask"] >= f["tasks created"] + f["429 answers"]["createTask"]
    assert f["tasks created"] == f["history tasks"] + f["created, id never reached the client"]
    assert f["outcomes"].get("success", 0) <= f["tasks created"]
    assert f["recovered by resume"] == f["resumable after the batch"]
    assert seconds < 60, f"the quick soak took {seconds:.0f} s"


def test_the_soak_books_catch_a_task_created_twice_behind_the_clients_back(sim, tmp_path):
    """The checks can fail: a second createTask for the same request, sent outside the client, is a duplicate
    (two tasks for one request) and a lost task (in no history, with no outcome_unknown)."""
    client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY,
                           cache_dir=tmp_path / "images", timeout=(2.0, 5.0))
    session = Session(client=client, history=History(tmp_path / "history.jsonl"))
    request = GenerationRequest.create("soak control: a lighthouse at dusk")
    try:
        result = generate_many([request], session=session, progress=False)
        session.wait_all(10)
        assert result.ok
        clean = soak.check(sim, session, [request], {0: result[0]})
        assert clean["ok"], clean["problems"]
        answer = requests.post(sim.url + "/api/v1/jobs/createTask", json=request.to_payload(), timeout=5,
                               headers={"Authorization": f"Bearer {KEY}"}).json()
        assert answer["code"] == 200
        books = soak.check(sim, session, [request], {0: result[0]})
    finally:
        session.close()
    assert not books["ok"]
    assert books["problems"]["duplicates"] == ["item 0: 2 tasks created"]
    assert books["problems"]["lost"] == [f"{answer['data']['taskId']}: created, not in the history, "
                                         "no outcome_unknown for its request"]
