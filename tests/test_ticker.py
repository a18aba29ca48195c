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
        calls = []
        with capture_output():
            shell.run_cell("%%imagen4 --no-wait -o job\nticking")
            view = next(iter(magics.views.live()))
            real = view.refresh
            view.refresh = lambda: (calls.append(time.monotonic()), real())
            shell.user_ns["job"].wait(10)
            assert view.finalized  # rendered before the job reported done
        assert len(calls) >= 3  # about every 0.1 s while the task ran
        assert not [t for t in threading.enumerate() if t.name == "imagen4-ticker"]
        time.sleep(0.3)
        assert magics.views.ticker.scheduled is False  # stopped once no live card was left
    finally:
        session = magics.session
        M.unload(shell)
        session.close()
        S.set_session(None)
        shell.config.pop("Imagen4Magics", None)
