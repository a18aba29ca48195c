"""Spend control in the magic and the session: prices learned from the balance, a kernel budget that refuses
before sending, and `%imagen4 spend` against the simulator's ledger."""
from __future__ import annotations

import pytest
from conftest import FAST_POLL, FAST_RETRY, KEY
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from test_magics import creates, simulator_env

from imagen4_jupyter import BudgetExceededError, GenerationRequest
from imagen4_jupyter.api.spend import PriceBook
from imagen4_jupyter.notebook import magics as M
from imagen4_jupyter.records import session as S
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.spend import spend_summary
from imagen4_jupyter.simulator import Simulator

PRICES = {"google/imagen4": 7, "google/imagen4-fast": 3, "google/imagen4-ultra": 11}  # not the list prices


@pytest.fixture
def priced_sim():
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
                   enforce_limits=False, prices=PRICES, credits=100, announce=False) as sim:  # real spending
        yield sim


def session_for(sim, tmp_path) -> S.Session:
    s = S.Session(history=History(tmp_path / ".imagen4" / "spend.jsonl"), client_options=dict(
        api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "images"))
    s.spending.prices = s.probe.prices = PriceBook()  # a fresh book: nothing measured yet
    return s


def test_prices_learned_from_the_balance_match_the_simulators_charges(priced_sim, tmp_path):
    s = session_for(priced_sim, tmp_path)
    try:
        for model in ("fast", "ultra", "standard"):
            assert s.spending.prices.price(model)[1] is False  # an estimate until measured
            s.submit(GenerationRequest.create(f"a {model} fox", model=model)).result(10)
        for name, price in PRICES.items():
            assert s.spending.prices.price(name) == (price, True)
        balance_reads = priced_sim.count("credit")
        s.submit(GenerationRequest.create("another fast fox", model="fast")).result(10)
        assert priced_sim.count("credit") == balance_reads  # once measured, no more balance reads
        summary = spend_summary(s.history, s.spending.prices)
        assert summary.credits == sum(c.credits for c in priced_sim.charges) == 3 + 11 + 7 + 3
        assert not summary.estimated
    finally:
        s.close()


def test_a_budget_refuses_before_sending_and_is_never_overspent(priced_sim, tmp_path):
    s = session_for(priced_sim, tmp_path)
    s.spending.budget = 20
    try:
        s.submit(GenerationRequest.create("fox 1", model="standard")).result(10)  # ~6 estimated, 7 measured
        s.submit(GenerationRequest.create("fox 2", model="standard")).result(10)
        sent = priced_sim.count("createTask")
        with pytest.raises(BudgetExceededError) as info:
            s.submit(GenerationRequest.create("fox 3", model="standard"))
        assert priced_sim.count("createTask") == sent  # nothing sent
        text = str(info.value)
        assert "6 of this kernel's budget of 20 are left" in text and "~7 credits" in text
        assert "%config Imagen4Magics.budget" in text
        s.submit(GenerationRequest.create("fox 4", model="fast")).result(10)  # 3 fits in the 6 left
        assert sum(c.credits for c in priced_sim.charges) <= 20
        assert s.spending.left() == 3  # 20 - 7 - 7 - 3: nothing more of standard fits
        with pytest.raises(BudgetExceededError):
            s.submit(GenerationRequest.create("fox 5", model="standard", seed="1"), force=True)
        assert sum(c.credits for c in priced_sim.charges) == 17
    finally:
        s.close()


@pytest.fixture
def ip(priced_sim, tmp_path, monkeypatch):
    simulator_env(monkeypatch, priced_sim, tmp_path)
    shell = InteractiveShell.instance()
    shell.config.pop("Imagen4Magics", None)
    with capture_output():
        magics = M.load(shell)
    magics.poll_interval = 0.02
    magics.display_mode = "text"
    magics.session.configure_client(retry=FAST_RETRY)
    yield shell
    session = magics.session
    M.unload(shell)
    session.close()
    S.set_session(None)
    shell.config.pop("Imagen4Magics", None)


def test_a_cell_refused_by_the_budget_sends_nothing_and_says_what_to_do(ip, priced_sim):
    with capture_output() as cap:
        ip.run_cell("%config Imagen4Magics.budget = 5")
        result = ip.run_cell("%%imagen4 -m ultra --wait\na lighthouse")
    assert creates(priced_sim) == []
    assert result.error_in_exec is not None
    text = cap.stdout + cap.stderr + str(result.error_in_exec)
    assert "Over budget" in text and "%config Imagen4Magics.budget" in text and "ultra" in text


def test_spend_matches_the_simulators_ledger(ip, priced_sim):
    with capture_output() as cap:
        ip.run_cell("%%imagen4 -m fast -s 1 --wait\na fox")
        ip.run_cell("%%imagen4 -m ultra -s 2 --wait\na fox")
        ip.run_cell("%%imagen4 -m fast -s 1 --wait\na fox")  # reused: nothing sent, nothing spent
        ip.run_cell("%imagen4 spend")
    total = sum(c.credits for c in priced_sim.charges)
    assert total == 3 + 11 and len(priced_sim.charges) == 2
    shown = "\n".join(o.data.get("text/plain", "") for o in cap.outputs) + cap.stdout
    assert f"2 tasks created: {total:g} credits" in shown
    assert "fast: 1 task, 3 credits" in shown and "ultra: 1 task, 11 credits" in shown


def test_a_batch_stops_at_the_kernels_budget(priced_sim, tmp_path):
    from imagen4_jupyter import generate_many

    s = session_for(priced_sim, tmp_path)
    s.spending.budget = 20
    try:
        result = generate_many([f"fox {i}" for i in range(6)], session=s, model="fast", concurrency=1,
                               progress=False)
    finally:
        s.close()
    spent = sum(c.credits for c in priced_sim.charges)
    assert spent <= 20 and len(priced_sim.charges) == 6  # 3 measured per fast task: all six fit in 20
    s2 = session_for(priced_sim, tmp_path / "b")
    s2.spending.budget = 10
    try:
        result = generate_many([f"owl {i}" for i in range(6)], session=s2, model="fast", concurrency=1,
                               progress=False)
    finally:
        s2.close()
    sent = [r for r in result.rows if r["task_id"]]
    assert len(sent) == 3 and sum(c.credits for c in priced_sim.charges) == spent + 9  # 4 + 3 + 3, then no more
    assert any("budget" in str(r.get("error") or r.get("note") or "") for r in result.rows if not r["task_id"])


@pytest.mark.kernel
def test_spend_after_restart_and_run_all_counts_the_reuse(tmp_path):
    """Restart & Run All: a new kernel re-runs the notebook's seeded cells, which are reused from its own
    history (nothing sent); `%imagen4 spend` counts those reuses and the credits they saved."""
    from kernel_util import FAST_CONFIG, Kernel, kernel_env
    from reliability_util import KERNEL_KEY

    cells = ["%%imagen4 -m fast -s 1 --wait\na fox in the snow", "%%imagen4 -m ultra -s 2 --wait\nan owl at dusk"]
    with Simulator(api_keys=(KERNEL_KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05),
                   image_scale=0.0625, enforce_limits=False, prices=PRICES, credits=100,
                   announce=False) as sim:  # stands for the real service: its spend is real spend
        cwd = tmp_path / "nb"
        cwd.mkdir()
        env = kernel_env(sim.url, KERNEL_KEY, tmp_path / "ipython")
        runs = []
        for _ in range(2):  # the first run, then Restart & Run All
            k = Kernel(cwd, env)
            try:
                for code in ("%load_ext imagen4_jupyter", FAST_CONFIG, *cells):
                    ran = k.execute(code, timeout=60)
                    assert ran.ok, ran.text()
                runs.append(k.execute("%imagen4 spend").text())
            finally:
                k.close()
        assert sim.count("createTask") == 2  # the second run sent nothing
        paid = sum(c.credits for c in sim.charges)
        assert paid == 3 + 11
    first, again = runs
    assert "2 tasks created: 14 credits" in first and "reuse: 0 tasks (0 images)" in first, first
    assert "2 tasks created: 14 credits" in again, again
    # each reused at what its task cost (measured from the balance in the first run): 3 + 11
    assert "reuse: 2 tasks (2 images) shown from the history, ~14 credits not spent" in again, again
