"""Prices, estimates, the dry run and a batch's budget: `api/spend.py` on its own, and `generate_many(dry_run=,
budget=)` over real sockets against a simulator that bills per model (4 fast / 6 standard / 12 ultra)."""
from __future__ import annotations

from collections import Counter

import pytest
from conftest import KEY, session_on

from imagen4_jupyter import InvalidRequestError, generate_many
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.api.spend import PriceBook, default_price_book, estimate, total_credits
from imagen4_jupyter.research.budget import BatchPlan
from imagen4_jupyter.simulator import Simulator


@pytest.fixture
def billing():
    """A fast simulator that charges the documented per-task prices (no per-image pricing), limits off."""
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
                   enforce_limits=False, credits=1000, announce=False) as s:  # real spending
        yield s



@pytest.fixture
def session(billing, tmp_path):
    s = session_on(billing, tmp_path)
    yield s
    s.close()


# -- PriceBook and estimate (pure) ------------------------------------------------------------------
def test_price_book_starts_from_the_list_prices_as_estimates():
    book = PriceBook()
    assert book.price("fast") == (4.0, False)
    assert book.price("google/imagen4") == (6.0, False)
    assert book.price("ultra") == (12.0, False)
    assert book.price(None) == (6.0, False)  # the default model
    assert "ultra 12 (estimate)" in repr(book)
    with pytest.raises(InvalidRequestError, match="Unknown model 'turbo'"):
        book.price("turbo")


def test_overrides_are_used_until_a_measurement_and_measurements_take_the_median():
    book = PriceBook({"ultra": 10, "google/imagen4-fast": 3.5})
    assert book.price("ultra") == (10.0, False) and book.price("fast") == (3.5, False)
    assert book.learn("ultra", 11) == 11.0
    assert book.price("ultra") == (11.0, True) and book.measured("ultra")
    book.learn("ultra", 11)
    book.learn("ultra", 40)  # one odd delta (another task finished meanwhile) does not move the price
    assert book.price("ultra") == (11.0, True)
    assert book.learn_from_balances("fast", 100, 92, tasks=2) == 4.0
    assert book.price("fast") == (4.0, True)
    assert book.learn_from_balances("standard", 100, 150) is None  # a top-up teaches nothing
    assert book.price("standard") == (6.0, False)
    book.forget("ultra")
    assert book.price("ultra") == (10.0, False)
    for bad in (-1, float("nan"), "many", True):
        with pytest.raises(InvalidRequestError):
            book.learn("fast", bad)
    with pytest.raises(InvalidRequestError):
        PriceBook({"fast": -2})


def test_estimate_counts_per_model_and_reused_ones_cost_nothing():
    reqs = [GenerationRequest.create("a", model="fast"), GenerationRequest.create("b", model="ultra"),
            GenerationRequest.create("c", model="ultra"), GenerationRequest.create("d"),
            GenerationRequest.create("e", model="fast", num_images=4)]
    book = PriceBook()
    book.learn("fast", 5)
    est = estimate(reqs, reusable=[2], prices=book)
    assert list(est) == ["google/imagen4-fast", "google/imagen4-ultra", "google/imagen4"]
    fast, ultra, standard = est.values()
    assert (fast.to_create, fast.reused, fast.credits, fast.measured) == (2, 0, 10.0, True)
    assert (ultra.to_create, ultra.reused, ultra.credits, ultra.measured) == (1, 1, 12.0, False)
    assert (standard.to_create, standard.reused, standard.credits) == (1, 0, 6.0)
    assert total_credits(est) == (28.0, False)
    assert ultra.text() == "1 ultra ~12 credits" and fast.text() == "2 fast 10 credits"
    assert estimate([], prices=book) == {}
    assert isinstance(default_price_book(), PriceBook)


# -- the dry run ----------------------------------------------------------------------------------
def test_dry_run_sends_no_task_and_counts_reuse_per_model_with_the_balance(billing, session):
    generate_many(["p0", "p1"], session=session, seed=7, model="ultra", progress=False)  # 2 ultra in the history
    billing.reset_counts()
    items = ["p0", "p1", "p2", {"prompt": "p3", "model": "fast"}, {"prompt": "p4", "model": "fast"}]
    plan = generate_many(items, session=session, seed=7, model="ultra", dry_run=True, reuse="seeded")
    assert isinstance(plan, BatchPlan)
    assert billing.count("createTask") == 0 and billing.count("credit") == 1
    assert (plan.items, plan.reused, plan.to_create) == (5, 2, 3)
    ultra, fast = plan.models["google/imagen4-ultra"], plan.models["google/imagen4-fast"]
    assert (ultra.to_create, ultra.reused, ultra.credits) == (1, 2, 12.0)
    assert (fast.to_create, fast.reused, fast.credits) == (2, 0, 8.0)
    assert plan.credits == 20.0 and not plan.measured
    assert plan.balance == 1000 - 24
    line = plan.line()
    assert line == ("imagen4 batch plan: 5 items · 2 reused (0 credits) · 3 to create: 1 ultra ~12 credits, "
                    "2 fast ~8 credits · ~20 credits (estimate) · balance 976 credits")
    assert repr(plan).startswith("<BatchPlan 5 items") and str(plan) == line
    html = plan._repr_html_()
    assert "nothing sent" in html and "<td>ultra</td><td>1</td><td>2</td>" in html

    # the real batch then does just that: 3 tasks for 20 credits
    result = generate_many(items, session=session, seed=7, model="ultra", reuse="seeded", progress=False)
    assert billing.count("createTask") == 3 and sum(c.credits for c in billing.charges[-3:]) == 20
    assert Counter(i.origin for i in result) == {"reused": 2, "created": 3}


def test_dry_run_with_an_unreadable_balance_says_unknown(billing, tmp_path):
    billing.inject("credit", times=None, code=500)
    s = session_on(billing, tmp_path)
    try:
        plan = generate_many(["a", "b"], session=s, dry_run=True)
    finally:
        s.close()
    assert plan.balance is None and billing.count("createTask") == 0
    assert "balance unknown (Server error)" in plan.line()
    assert "~12 credits (estimate)" in plan.line()


def test_a_real_batch_prints_the_plan_line_before_it_starts(billing, session, capsys):
    generate_many(["a", {"prompt": "b", "model": "ultra"}], session=session, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("imagen4 batch plan: 2 items · 2 to create: 1 standard ~6 credits, 1 ultra ~12 credits · "
                        "~18 credits (estimate) · balance 1,000 credits")
    assert lines[-1].startswith("imagen4 batch (standard + ultra): 2/2 done")


# -- the budget -----------------------------------------------------------------------------------
def test_a_budget_stops_before_the_first_item_that_does_not_fit(billing, session):
    items = [{"prompt": f"q{i}", "model": m} for i, m in enumerate(["fast", "standard", "ultra", "fast", "fast"])]
    plan = generate_many(items, session=session, budget=15, dry_run=True)
    assert plan.over_budget == [2, 3, 4] and plan.to_create == 2 and plan.credits == 10
    assert plan.notes[2] == "budget: 5 credits left, this item costs ~12"

    result = generate_many(items, session=session, budget=15, concurrency=2, progress=False)
    assert [i.state for i in result] == ["success", "success", "over-budget", "over-budget", "over-budget"]
    assert billing.count("createTask") == 2
    assert sum(c.credits for c in billing.charges) == 10 <= 15
    rows = result.rows
    assert rows[2]["note"] == "budget: 5 credits left, this item costs ~12"
    # item 3 would fit (4 <= 5), but the batch stops at the first item that does not: predictable, in order
    assert rows[3]["note"] == "budget: the batch stopped sending at item 2 (5 credits left, it costs ~12)"
    assert result.stats["over_budget"] == 3 and result.stats["estimated_credits"] == 10
    assert "budget 15: ~10 credits sent, 3 not sent" in result.summary()
    assert "this item costs ~12" in result._repr_html_()


def test_a_budget_stopped_batch_shows_no_failure_anywhere(billing, session, capsys):
    """Items a budget kept back read "not sent (budget)": in the progress line (text and HTML, no red bar),
    the summary, the table and the counts; a failure of another item still counts as one."""
    from imagen4_jupyter.research.progress import Progress, ProgressState
    from imagen4_jupyter.research.results import item_counts

    items = [{"prompt": f"b{i}", "model": "ultra"} for i in range(4)]
    result = generate_many(items, session=session, budget=24, concurrency=2, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("imagen4 batch (ultra): 4/4 done") and "2 not sent (budget)" in err[-1], err
    assert "failed" not in "\n".join(err)
    assert result.failed == [] and [i.index for i in result.not_sent] == [2, 3] and not result.ok
    assert result.counts() == {"success": 2, "over-budget": 2}
    assert result.summary().startswith("4 items: 2 success, 2 not sent (budget) · 2 tasks created")
    counts = item_counts(result.items)
    assert (counts["failed"], counts["budget"], counts["done"]) == (0, 2, 4)
    bar = Progress(4)._bundle(ProgressState(counts), final=True)
    assert "accent-color:#2563eb" in bar["text/html"] and "2 not sent (budget)" in bar["text/plain"]
    table = result._repr_html_()
    assert table.count(">not sent (budget)</span></td>") == 2 and "failed" not in table
    assert "var(--jp-error-color1" not in table  # no red dot
    # a real failure still reads as one (and turns the final bar red)
    billing.next_outcomes.append({"fail": ("500", "internal error")})
    failed = generate_many([{"prompt": "c0", "model": "fast"}, {"prompt": "c1", "model": "ultra"},
                            {"prompt": "c2", "model": "ultra"}], session=session, budget=16, concurrency=1,
                           progress=False)
    assert [i.state for i in failed] == ["fail", "success", "over-budget"]
    assert failed.summary().startswith("3 items: 1 success, 1 failed, 1 not sent (budget)")
    red = Progress(3)._bundle(ProgressState(item_counts(failed.items)), final=True)
    assert "accent-color:#b91c1c" in red["text/html"] and "1 failed · 1 not sent (budget)" in red["text/plain"]


def test_reused_results_cost_nothing_against_the_budget(billing, session):
    seeded = [{"prompt": f"r{i}", "seed": i} for i in range(4)]
    generate_many(seeded[:3], session=session, progress=False)  # three of them are in the history
    before = len(billing.charges)
    result = generate_many(seeded + [{"prompt": "r9", "seed": 9}], session=session, budget=6, progress=False)
    assert [i.origin for i in result] == ["reused", "reused", "reused", "created", None]
    assert result[4].state == "over-budget" and "0 credits left" in result[4].note
    assert len(billing.charges) - before == 1 and billing.charges[-1].credits == 6


def test_a_budget_with_many_tasks_in_flight_never_passes_it(billing, session):
    billing.next_outcomes.extend([{"generation_time": 0.3}] * 20)  # slow tasks: many in flight at once
    items = [{"prompt": f"s{i}", "model": "ultra" if i % 3 == 0 else "fast"} for i in range(20)]
    budget = 50
    result = generate_many(items, session=session, budget=budget, concurrency=6, progress=False)
    spent = sum(c.credits for c in billing.charges)
    assert spent <= budget
    created = [i for i in result if i.origin == "created"]
    assert billing.count("createTask") == len(created) == len(billing.charges)
    assert spent == sum(12 if i.request.model.endswith("ultra") else 4 for i in created)
    # the items sent are exactly the prefix that fits; nothing after the first refusal
    first_refused = min(i.index for i in result if i.state == "over-budget")
    assert all(i.index < first_refused for i in created)
    assert spent + (12 if first_refused % 3 == 0 else 4) > budget


def test_a_measured_price_drives_the_budget(billing, session):
    billing.prices["google/imagen4"] = 9  # the service charges more than the list says
    book = PriceBook()
    before = session.client.credits()
    generate_many(["probe"], session=session, prices=book, progress=False)
    assert book.learn_from_balances("standard", before, session.client.credits()) == 9
    result = generate_many([f"t{i}" for i in range(4)], session=session, prices=book, budget=20, progress=False)
    assert [i.state for i in result] == ["success", "success", "over-budget", "over-budget"]
    assert result[2].note == "budget: 2 credits left, this item costs 9"  # measured: no "~"
    assert sum(c.credits for c in billing.charges) == 9 + 18


def test_bad_budgets_are_refused_before_anything_is_sent(billing, session):
    for bad in (-1, "ten", True, float("nan")):
        with pytest.raises(InvalidRequestError, match="budget must be"):
            generate_many(["a"], session=session, budget=bad, progress=False)
    assert billing.count("createTask") == 0


# -- running out of credits -------------------------------------------------------------------------
def test_a_402_stops_the_batch_at_once_and_nothing_is_resent(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
                   enforce_limits=False, credits=20, prices={"google/imagen4": 6, "google/imagen4-fast": 4,
                                                             "google/imagen4-ultra": 12}, announce=False) as sim:
        s = session_on(sim, tmp_path)
        try:
            result = generate_many([f"u{i}" for i in range(8)], session=s, concurrency=1, progress=False)
        finally:
            s.close()
        states = [i.state for i in result]
        assert states == ["success"] * 3 + ["error"] + ["not-submitted"] * 4
        assert "Not enough credits" in result.rows[3]["error"]
        assert all("Not enough credits" in r["error"] for r in result.rows[4:])
        assert sim.count("createTask") == 4  # three paid, one refused, none resent
        assert len(sim.charges) == 3 and sim.credits == 2


def test_a_402_with_several_in_flight_sends_nothing_after_it(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.2, 0.2), image_scale=0.0625,
                   enforce_limits=False, credits=30, announce=False) as sim:
        s = session_on(sim, tmp_path)
        try:
            result = generate_many([f"v{i}" for i in range(12)], session=s, concurrency=3, progress=False)
        finally:
            s.close()
        assert len(sim.charges) == 5 and sim.credits == 0  # 5 standard tasks of 6
        refused = [i for i in result if i.state == "error"]
        assert refused and all("Not enough credits" in result.rows[i.index]["error"] for i in refused)
        # at most the requests already on their way when the first 402 came back were sent after it
        assert sim.count("createTask") <= 5 + 3
        assert Counter(i.state for i in result)["success"] == 5
        assert all(i.state == "not-submitted" for i in result if i.index >= sim.count("createTask"))


def test_a_429_coming_back_after_a_402_does_not_requeue_its_item(tmp_path):
    """The 402 stops the batch while another createTask is still out; its late 429 must not put the item back
    in a queue nobody sends from any more (the batch would never end)."""
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
                   enforce_limits=False, announce=False) as sim:
        sim.inject("createTask", times=1, code=402)
        sim.inject("createTask", times=1, code=429, delay=0.4)
        s = session_on(sim, tmp_path)
        try:
            result = generate_many([f"w{i}" for i in range(6)], session=s, concurrency=2, progress=False,
                                   wait=False)
            result.wait(timeout=10)
        finally:
            s.close()
        assert Counter(i.state for i in result) == {"error": 1, "not-submitted": 5}
        assert sim.count("createTask") == 2 and not sim.tasks
        late = [i for i in result if "after the batch had stopped" in i.note]
        assert len(late) == 1 and late[0].error.title == "Rate limited"
