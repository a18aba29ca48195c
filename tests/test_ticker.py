"""Live cards tick on the poller's threads (Poller.call_later), so the magic starts no thread of its own."""
from __future__ import annotations

import threading
import time

from conftest import KEY
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from imagen4_jupyter.notebook import magics as M
from imagen4_jupyter.records import session as S


def test_call_later_runs_on_a_worker_and_poke_skips_it(make_client):
    client = make_client()
    ran = threading.Event()
    names = []
    client.poller.call_later(0.05, lambda: (names.append(threading.current_thread().name), ran.set()))
    client.poller.poke("task_none")  # a scheduled call is not a task
    assert ran.wait(5) and names[0].startswith("imagen4-http")
    client.poller.call_later(0.0, lambda: 1 / 0)  # a failing call is logged; the poller goes on
    assert client.generate("after a failing call", timeout=10).images


def test_live_cards_refresh_without_a_ticker_thread(sim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shell = InteractiveShell.instance()
    with capture_output():
        magics = M.load(shell)
    try:
        magics.display_mode, magics.refresh_interval, magics.poll_interval = "rich", 0.1, 0.05
        sim.generation_time = 1.0
        calls, threads = [], set()
        before = set(threading.enumerate())
        with capture_output():
            shell.run_cell("%%imagen4 --no-wait -o job\nticking")
            view = next(iter(magics.views.live()))
            real = view.refresh
            view.refresh = lambda: (calls.append(time.monotonic()), threads.add(threading.current_thread()), real())
            shell.user_ns["job"].wait(10)
            assert view.finalized  # rendered before the job reported done
            started = set(threading.enumerate()) - before
        assert len(calls) >= 3  # about every 0.1 s while the task ran
        # the refreshes ran on the client's poller workers (Poller.call_later), and the cell started no thread
        # besides the client's poller, its workers and its sender (the simulator's request threads aside)
        assert threads and all(t.name.startswith(("imagen4-http", "imagen4-sender")) for t in threads), [  # state
            t.name for t in threads]  # changes refresh from the thread that moved the job (sender or poller)
        others = [t.name for t in started if not t.name.startswith(("imagen4-http", "imagen4-poller", "imagen4-sender",
                                                                          "imagen4-lease"))
                  and "process_request_thread" not in t.name]
        assert others == [], others
        time.sleep(0.3)
        assert magics.views.ticker.scheduled is False  # stopped once no live card was left
    finally:
        session = magics.session
        M.unload(shell)
        session.close()
        S.set_session(None)
        shell.config.pop("Imagen4Magics", None)


class FakeView:
    """A live rich card that counts the update_display messages its refresh would send."""

    rich = True

    def __init__(self, sent: list):
        self.sent = sent

    def refresh(self) -> None:
        self.sent.append((time.monotonic(), id(self)))


class FakeHost:
    def __init__(self, client, interval: float):
        self.refresh_interval = interval
        self.session = type("FakeSession", (), {"client": client})()


class FakeOwner:
    def __init__(self, host, views):
        self.host, self.views = host, views

    def live(self):
        return list(self.views)


def test_a_hundred_live_cards_send_at_most_about_twenty_refreshes_a_second(make_client):
    from imagen4_jupyter.notebook.cellview import MAX_REFRESHES_PER_SECOND, Ticker

    sent: list[tuple[float, int]] = []
    views = [FakeView(sent) for _ in range(100)]
    owner = FakeOwner(FakeHost(make_client(), 0.1), views)
    ticker = Ticker(owner)
    ticker.ensure()
    time.sleep(2.05)
    ticker.stop()
    time.sleep(0.25)
    assert MAX_REFRESHES_PER_SECOND == 20
    first = sent[0][0]
    per_second = [sum(1 for t, _ in sent if start <= t < start + 1.0) for start in (first, first + 1.0)]
    assert 5 <= per_second[0] <= 22 and per_second[1] <= 22, per_second  # not 100 x 10 a second
    assert len({who for _, who in sent}) == len(sent)  # a rotating share: nobody twice while others wait
    counts = [0] * 100
    ticker2 = Ticker(FakeOwner(FakeHost(make_client(), 1.0), views))
    for _ in range(5):
        for v in ticker2.due(views):
            counts[views.index(v)] += 1
    assert counts == [1] * 100  # 5 ticks x 20 = each of the 100 cards exactly once


def test_state_changes_take_their_share_of_the_refresh_budget(make_client):
    """Updates sent by state changes leave that many fewer for the next tick's elapsed-time refreshes, so the
    two together stay within about 20 a second; the share is whole again on the tick after."""
    from imagen4_jupyter.notebook.cellview import Ticker

    views = [FakeView([]) for _ in range(100)]
    ticker = Ticker(FakeOwner(FakeHost(make_client(), 1.0), views))
    assert len(ticker.due(views)) == 20
    ticker.sent(3)
    ticker.sent(4)  # three task state changes and a finished task's card and three image slots
    assert len(ticker.due(views)) == 13
    ticker.sent(50)  # more than the whole share: no refresh this tick, and none owed later
    assert ticker.due(views) == []
    assert len(ticker.due(views)) == 20


def test_state_changes_are_not_held_back_by_the_ticker_budget(sim, tmp_path, monkeypatch):
    """A job's state change renders its card at once, even with many live cards sharing the refresh budget."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shell = InteractiveShell.instance()
    with capture_output():
        magics = M.load(shell)
    try:
        magics.display_mode, magics.refresh_interval, magics.poll_interval = "rich", 5.0, 0.02
        with capture_output():
            shell.run_cell("%%imagen4 --no-wait -o job\nat once")
            job = shell.user_ns["job"]
            job.wait(10)
        assert job.images and not magics.views.live()  # the final card went out with the state, no tick needed
        assert job.elapsed < 5.0  # well before the first elapsed-time refresh was due
    finally:
        session = magics.session
        M.unload(shell)
        session.close()
        S.set_session(None)
        shell.config.pop("Imagen4Magics", None)
