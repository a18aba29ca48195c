"""The sliding windows that keep the client under the documented limits (api/pacing.py)."""
from __future__ import annotations

import itertools

import pytest

from imagen4_jupyter import ConfigurationError
from imagen4_jupyter.api.pacing import Limits, SlidingWindow, limits_from_env, shared_pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times))


def test_slots_never_exceed_the_limit_in_any_window():
    clock = Clock()
    w = SlidingWindow(20, 10.0, margin=0.0, clock=clock)
    used = []
    for step in itertools.islice(itertools.cycle([0.0, 0.01, 0.3, 0.0, 1.7]), 137):
        clock.now += step
        used.append(clock.now + w.reserve())
    assert max_in_window(used, 10.0) == 20
    assert used == sorted(used)


def test_the_first_count_slots_are_free_and_the_next_waits_for_the_window():
    clock = Clock()
    w = SlidingWindow(3, 1.0, margin=0.05, clock=clock)
    assert [w.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert w.wait_hint() == pytest.approx(1.05)
    assert w.reserve() == pytest.approx(1.05)
    clock.now += 5
    assert w.wait_hint() == 0.0


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        SlidingWindow(0, 1.0)
    with pytest.raises(ValueError):
        SlidingWindow(1, 0)


def test_one_pacer_per_service_and_key_shared_by_the_process():
    a = shared_pacer("http://127.0.0.1:1/", "key-a")
    assert shared_pacer("http://127.0.0.1:1", "key-a") is a
    assert shared_pacer("http://127.0.0.1:1", "key-b") is not a
    off = shared_pacer("http://127.0.0.1:1", "key-a", Limits.off())
    assert off is not a and off.create_delay() == 0.0 and off.query_delay() == 0.0
    assert "key-a" not in repr(vars(a)) and all("key-a" not in str(k) for k in vars(a))


def test_try_take_takes_only_a_free_slot():
    clock = Clock()
    w = SlidingWindow(2, 1.0, margin=0.0, clock=clock)
    assert w.try_take() == 0.0 and w.try_take() == 0.0
    assert w.try_take() == pytest.approx(1.0)  # full: nothing taken
    clock.now += 0.5
    assert w.try_take() == pytest.approx(0.5)
    clock.now += 0.5
    assert w.try_take() == 0.0
    assert w.reserve() == 0.0  # 1000 is a whole window before 1001
    assert w.reserve() == pytest.approx(1.0)  # a reservation queues behind the taken slots
    assert w.try_take() == pytest.approx(1.0)  # and try_take never jumps the queue


def test_limits_from_the_environment():
    assert limits_from_env(None) == Limits() == limits_from_env("  ")
    assert limits_from_env("off") == Limits.off()
    assert limits_from_env("create=5/2") == Limits(create=(5, 2.0), query=(10, 1.0))
    assert limits_from_env("create=off,query=3/1.5") == Limits(create=None, query=(3, 1.5))
    for bad in ("fast", "create=5", "create=0/1", "query=a/b", "pace=1/1"):
        with pytest.raises(ConfigurationError, match="APIKLEY_LIMITS"):
            limits_from_env(bad)
