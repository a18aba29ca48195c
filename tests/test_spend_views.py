"""What a task cost, where a researcher looks: the status card, `%imagen4 history`, the export and the panel;
and the cost a callback reports (`consumeCredits`), which is a hint and never recorded as measured, signed or not
(the signature covers only the task id and the time). All against the simulator's own ledger, with prices that
are not the list prices (so an estimate and a measurement differ)."""
from __future__ import annotations

import csv
import json
import re
import time
import urllib.request

import pytest
from conftest import FAST_RETRY, KEY
from IPython.utils.capture import capture_output
from test_kernel_spend import PRICES, ip, priced_sim, session_for  # noqa: F401 - fixtures

from imagen4_jupyter import GenerationRequest, PollSchedule
from imagen4_jupyter.api.callbacks import signature
from imagen4_jupyter.api.cards import card_bundle
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.api.spend import PriceBook
from imagen4_jupyter.notebook.outputs import history_bundle
from imagen4_jupyter.records.export import export_history
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

WEBHOOK = "whk-spend-views"


def ledger(sim) -> dict[str, float]:
    return {c.task_id: c.credits for c in sim.charges}


def texts(cap) -> str:
    return "\n".join(o.data.get("text/plain", "") for o in cap.outputs) + cap.stdout


def test_the_card_says_what_a_task_cost_and_a_reuse_costs_nothing(ip, priced_sim):  # noqa: F811
    with capture_output() as cap:
        ip.run_cell("%%imagen4 -m fast -s 1 --wait\na fox")
    shown = texts(cap)
    assert len(priced_sim.charges) == 1
    assert "3 credits" in shown and "~4 credits" not in shown.split("done")[-1]  # measured, not the list price
    with capture_output() as cap:
        ip.run_cell("%%imagen4 -m fast -s 1 --wait\na fox")  # the same request: reused
    assert len(priced_sim.charges) == 1
    assert "0 credits" in texts(cap)


def test_an_estimate_is_marked_with_a_tilde_on_the_card():
    from imagen4_jupyter.api.job import Job, Ledger

    job = Job("task_1", GenerationRequest.create("a fox", model="ultra"))
    assert "credits" not in card_bundle(job)["text/plain"]  # a bare client's job: no price known
    Ledger().price(job, (12.0, False))
    assert "~12 credits" in card_bundle(job)["text/plain"]
    assert "~12&nbsp;credits" in card_bundle(job)["text/html"]  # never broken between its words
    Ledger().price(job, (11.0, True))
    plain = card_bundle(job)["text/plain"]
    assert "11 credits" in plain and "~" not in plain


def test_history_and_export_show_each_tasks_cost_as_the_simulator_charged(ip, priced_sim, tmp_path):  # noqa: F811
    with capture_output() as cap:
        ip.run_cell("%%imagen4 -m fast -s 1 --wait\na fox")
        ip.run_cell("%%imagen4 -m ultra -s 2 --wait\na fox")
        ip.run_cell("%imagen4 history")
        ip.run_cell(f"%imagen4 history --export {tmp_path / 'tasks.csv'}")
    charged = ledger(priced_sim)
    assert sorted(charged.values()) == [3, 11]
    shown = texts(cap)
    for task_id, credits in charged.items():
        line = next(ln for ln in shown.splitlines() if task_id in ln and "  success  " in ln)  # the table
        assert f"  {credits:g} credits  " in line, line
    rows = list(csv.DictReader((tmp_path / "tasks.csv").open()))
    assert {r["task_id"]: float(r["credits"]) for r in rows} == charged
    assert {r["credits_measured"] for r in rows} == {"True"}


def test_an_estimated_cost_is_recorded_and_exported_as_an_estimate(priced_sim, tmp_path):  # noqa: F811
    s = session_for(priced_sim, tmp_path)
    s.probe.start = lambda request, balance, *others: None  # no balance reads: nothing can be measured
    try:
        job = s.submit(GenerationRequest.create("a fox", model="standard"))
        job.result(10)
        assert job.cost == (6.0, False)  # the list price, marked as an estimate
    finally:
        s.close()
    assert ledger(priced_sim) == {job.task_id: 7}  # what the simulator really took
    rows = json.loads(export_history(s.history, tmp_path / "t.json").read_text())
    assert [(r["credits"], r["credits_measured"]) for r in rows] == [(6.0, False)]
    table = history_bundle(s.history.entries(), s.history)
    assert ">credits</th>" in table["text/html"] and ">~6</span></td>" in table["text/html"]
    assert "~6 credits" in table["text/plain"]


def test_the_panel_shows_the_price_and_what_is_left_of_the_budget(priced_sim, tmp_path):  # noqa: F811
    from imagen4_jupyter.notebook.panel import Panel

    s = session_for(priced_sim, tmp_path)
    panel = Panel(session=s)
    try:
        panel.model.value = "ultra"
        assert "~12 credits" in panel.controls.cost.value  # the list price, an estimate
        assert "left" not in panel.controls.cost.value  # no budget set
        s.spending.budget = 30
        panel.prompt.value = "a lighthouse"
        panel.seed.value = "5"
        record = panel.submit(wait=True)
        record["job"].result(10)
        deadline = time.monotonic() + 5
        while "reused, 0 credits" not in panel.controls.cost.value and time.monotonic() < deadline:
            time.sleep(0.02)
        # the same seeded settings would be taken from the history: nothing to pay
        assert panel.controls.cost.value.count("reused, 0 credits") == 2, panel.controls.cost.value  # text, title
        panel.seed.value = "6"  # new settings: a new task, at the measured price
        while "19 of 30 left" not in panel.controls.cost.value and time.monotonic() < deadline:
            time.sleep(0.02)
        value = panel.controls.cost.value
        assert "11 credits" in value and "~" not in value and "19 of 30 left" in value, value
        assert "imagen4-over" not in panel.controls.cost._dom_classes
        s.spending.budget = 20  # 9 left: another ultra task (11) would pass it
        panel.controls.show_cost()
        assert "imagen4-over" in panel.controls.cost._dom_classes
        assert "%config Imagen4Magics.budget" in panel.controls.cost.value
    finally:
        panel.close()
        s.close()


@pytest.fixture
def csim():
    with Simulator(api_keys=(KEY,), queue_time=(0.05, 0.1), generation_time=(0.3, 0.4), image_scale=0.0625,
                   webhook_key=WEBHOOK, prices=PRICES, credits=100, announce=False) as sim:
        yield sim


def callback_session(sim, tmp_path, key):
    s = Session(history_folder=str(tmp_path / "h"), client_options=dict(
        api_key=KEY, base_url=sim.url, cache_dir=tmp_path / "cache", timeout=(2.0, 5.0),
        schedule=PollSchedule(), limits=Limits(), retry=FAST_RETRY))
    s.spending.prices = s.probe.prices = PriceBook()
    s.probe.start = lambda request, balance, *others: None  # no balance reads: only the callbacks can measure
    s.enable_callbacks(listen="127.0.0.1:0", webhook_key=key)
    return s


def test_a_signed_callbacks_figures_are_a_hint_not_a_measurement(csim, tmp_path):
    """The service's signed callbacks carry the true consumeCredits, and still nothing is recorded from them: the
    body is not covered by the signature, so an altered one (999 credits) would be believed just the same."""
    s = callback_session(csim, tmp_path, WEBHOOK)
    try:
        jobs = [s.submit(GenerationRequest.create(f"a fox {i}", model=m, seed=i))
                for i, m in enumerate(("fast", "ultra"))]
        for job in jobs:
            job.result(15)
        csim.wait_for_callbacks(2)
        hub = s.callbacks
        deadline = time.monotonic() + 5
        while hub.hints < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.hints == 2
        # an altered body, validly signed (the signature covers task id and timestamp only)
        task_id = jobs[0].task_id
        token = next(t for t, (tid, _) in hub._tasks.items() if tid == task_id)  # noqa: SLF001 - the test's view
        stamp = str(int(time.time()) - 7)  # not the service's own timestamp: that signature would be a replay
        body = json.dumps({"code": 200, "data": {"taskId": task_id, "state": "success", "consumeCredits": 999,
                                                 "remainedCredits": 1}}).encode()
        host, port = hub.receiver.address
        req = urllib.request.Request(f"http://{host}:{port}/{token}", data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": signature(WEBHOOK, task_id, stamp)})
        with urllib.request.urlopen(req, timeout=5) as answer:
            assert answer.status == 200  # accepted as a hint
        time.sleep(0.3)
        assert [j.cost for j in jobs] == [(4.0, False), (12.0, False)]  # the list-price estimates stand
        assert s.spending.spent == 4 + 12 and s.spending.prices.price("ultra") == (12, False)
        assert not any(ev.get("event") == "cost" for ev in s.history.iter_events())
        assert all(e.credits_measured is False for e in s.history.entries())
        assert 999 not in [e.credits for e in s.history.entries()]
    finally:
        s.close()


def test_an_unsigned_callbacks_cost_is_not_believed(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.05, 0.1), generation_time=(0.3, 0.4), image_scale=0.0625,
                   prices=PRICES, credits=100, announce=False) as sim:
        s = callback_session(sim, tmp_path, None)
        try:
            job = s.submit(GenerationRequest.create("a fox", model="fast"))
            job.result(15)
            sim.wait_for_callbacks(1)
            time.sleep(0.2)
            assert job.cost == (4.0, False)  # the list price, still an estimate
            assert not any(ev.get("event") == "cost" for ev in s.history.iter_events())
        finally:
            s.close()


def test_prices_are_configurable_in_the_magic_and_a_bad_one_is_a_short_error(ip, priced_sim, caplog):  # noqa: F811
    session = ip.magics_manager.registry["Imagen4Magics"].session
    session.spending.prices = session.probe.prices = PriceBook()  # nothing measured yet
    with capture_output() as cap:
        ip.run_cell("%config Imagen4Magics.prices = {'ultra': 10, 'google/imagen4-fast': 2.5}")
    assert session.spending.prices.price("ultra") == (10, False)  # configured: still an estimate
    assert session.spending.prices.price("fast") == (2.5, False)
    assert session.spending.prices.price("standard") == (6, False)  # the list price
    with capture_output() as cap:
        result = ip.run_cell("%config Imagen4Magics.prices = {'mega': 3}")
    text = cap.stdout + cap.stderr + caplog.text  # %config logs a trait's error as one line
    assert result.error_in_exec is None and "prices: Unknown model 'mega'" in text, text
    assert "Traceback" not in text
    assert session.spending.prices.price("ultra") == (10, False)  # the bad value changed nothing
    with capture_output():
        ip.run_cell("%config Imagen4Magics.budget = 9")
        refused = ip.run_cell("%%imagen4 -m ultra --wait\na lighthouse")
    assert refused.error_in_exec is not None and "~10 credits" in str(refused.error_in_exec)
    assert priced_sim.count("createTask") == 0


def test_batch_dry_run_in_the_magic_sends_nothing_and_shows_the_plan(ip, priced_sim):  # noqa: F811
    ip.user_ns["fox_prompts"] = ["a fox", "a red fox", "a grey fox"]
    with capture_output():
        ip.run_cell("%%imagen4 -m fast -s 1 --wait\na fox")  # the first item is in the history already
    creates = priced_sim.count("createTask")
    with capture_output() as cap:
        result = ip.run_cell("%imagen4 batch fox_prompts -m fast -s 1 --dry-run -o plan")
    assert result.error_in_exec is None, result.error_in_exec
    assert priced_sim.count("createTask") == creates  # nothing sent
    plan = ip.user_ns["plan"]
    assert (plan.items, plan.reused, plan.to_create) == (3, 1, 2)
    line = texts(cap)
    assert "imagen4 batch plan: 3 items · 1 reused (0 credits) · 2 to create" in line, line
    assert "6 credits" in line and f"balance {100 - 3:g} credits" in line, line  # fast measured at 3 per task


def test_batch_budget_in_the_magic_stops_sending_at_it(ip, priced_sim):  # noqa: F811
    ip.user_ns["many"] = [f"a lighthouse {i}" for i in range(5)]
    with capture_output() as cap:
        result = ip.run_cell("%imagen4 batch many -m fast --budget 10 --wait -o kb")
    assert result.error_in_exec is None, result.error_in_exec
    spent = sum(c.credits for c in priced_sim.charges)
    # by estimate: the list price 4 until measured, so two fit in 10 and the third (12) would pass it
    assert spent <= 10 and len(priced_sim.charges) == 2, priced_sim.charges
    kb = ip.user_ns["kb"]
    rows = kb.rows
    assert [r["state"] for r in rows].count("over-budget") == 3  # not sent: never a failure
    assert kb.failed == [] and len(kb.not_sent) == 3 and kb.ok is False
    text, html = texts(cap), re.sub(r"<img [^>]*>", "", kb._repr_html_())  # the thumbnails' base64 aside
    assert "3 not sent (budget)" in text and "failed" not in text, text
    assert text.count("not sent (budget)  -  budget: ") == 3, text  # the table's lines say it too, with why
    assert html.count(">not sent (budget)</span></td>") == 3 and "3 not sent (budget)" in html, html
    assert "failed" not in html and "error-color" not in html  # no red dot, no failure count
    notes = [r["note"] for r in rows if r["state"] == "over-budget"]
    assert notes[0].startswith("budget: 2 credits left, this item costs ~4"), notes  # says which and why
    assert all(n.startswith("budget: ") for n in notes), notes
    assert "imagen4 batch plan: 5 items" in cap.stderr  # a real batch says its plan before it starts
    with capture_output() as cap:
        bad = ip.run_cell("%imagen4 batch many --budget -1")
    assert "--budget must be a number of credits" in cap.stdout + cap.stderr + str(bad.error_in_exec or "")
