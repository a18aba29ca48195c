"""Shared fixtures: a simulator on a free loopback port per test, and clients wired to it."""
from __future__ import annotations

import os

import pytest

from imagen4_jupyter import Imagen4Client, PollSchedule, RetryPolicy
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.simulator import Simulator

# After the run's last test, wherever it sorts: no API key in anything the run wrote (tests/secrets_guard.py).
pytest_plugins = ["secrets_guard"]

# Clients in tests pace nothing unless a test gives them limits (tests that need speed; the pacing tests and the
# documented-limits runs pass their own `limits=`, which win over this).
os.environ.setdefault("APIKLEY_LIMITS", "off")

KEY = "test-key-0123456789"  # searched for after the run (_run_log)
FAST_POLL = PollSchedule.fixed(0.02, max_wait=30.0)
FAST_RETRY = RetryPolicy(attempts=5, base=0.01, cap=0.05, max_retry_after=0.2)


def session_on(sim, folder, *, poll=FAST_POLL, retry=FAST_RETRY, history=None):
    """A Session on its own client against `sim` (fast polling and retries), its history in `folder`."""
    from imagen4_jupyter.records.history import History
    from imagen4_jupyter.records.session import Session

    client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=poll, retry=retry, cache_dir=folder / "images",
                           timeout=(2.0, 5.0))
    return Session(client=client, history=history or History(folder / "history.jsonl"))


@pytest.fixture
def sim():
    """A fast simulator: tasks finish in ~50 ms with tiny images. The documented limits are off here (tests that
    need speed); tests of pacing and of the limits build their own. It stands for the real service (`announce=False`:
    no simulator header), so the tests that use it see what a real notebook sees; tests of the simulated marks
    build a simulator that announces itself (the default)."""
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
                   enforce_limits=False, cost_per_image=4.0, unknown_task_code=404, announce=False) as s:
        yield s


@pytest.fixture
def make_client(sim, tmp_path):
    """Build clients against `sim` with fast polling and retries, and no pacing (the fixture's simulator has no
    limits either); all are closed after the test."""
    made = []

    def make(**kw) -> Imagen4Client:
        opts = dict(api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY,
                    cache_dir=tmp_path / "cache", timeout=(2.0, 5.0), limits=Limits.off())
        opts.update(kw)
        c = Imagen4Client(**opts)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture(scope="session", autouse=True)
def _run_log():
    """A DEBUG log of the package and of urllib3 for the whole run (test-artifacts/test-run.log).

    The end-of-run check (secrets_guard.py) searches it, with every other artifact, for the tests' API keys.
    """
    import logging
    from pathlib import Path

    from secrets_guard import watch  # imported here, once pytest_plugins above made it a plugin

    watch(KEY)

    path = Path(__file__).resolve().parents[1] / "test-artifacts" / "test-run.log"
    path.parent.mkdir(exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("imagen4_jupyter", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield path
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)
    handler.close()
