"""The documented limits (20 createTask / 10 s per account, 10 recordInfo / s per key), on by default."""

from __future__ import annotations

import time

import pytest
from test_simulator import Api, body

from imagen4_jupyter.simulator import Simulator
from imagen4_jupyter.simulator.__main__ import build_parser
from imagen4_jupyter.simulator.limits import max_in_window


def test_limits_are_on_by_default_and_documented_values() -> None:
    sim = Simulator()
    assert sim.enforce_limits is True
    assert sim.create_limit == (20, 10.0) and sim.query_limit == (10, 1.0)


def test_create_over_20_per_10_seconds_is_refused_not_queued() -> None:
    with Simulator(queue_time=0.0, generation_time=0.0) as sim:
        api = Api(sim)
        answers = [api.create(body()) for _ in range(25)]
        codes = [r.json()["code"] for r in answers]
        assert codes == [200] * 20 + [429] * 5
        refused = answers[-1]
        assert refused.status_code == 200 and refused.json()["data"] is None
        assert 1 <= int(refused.headers["Retry-After"]) <= 10
        assert len(sim.tasks) == 20 and len(sim.charges) == 20  # the refused ones created and billed nothing
        assert sim.count("createTask") == 25 and sim.max_in_window("createTask", 10.0) == 25
        assert sim.count_429("createTask") == 5 and sim.count_429() == 5 and sim.count_429("recordInfo") == 0


def test_create_window_is_per_account_and_configurable() -> None:
    with Simulator(api_keys=("k1", "k2"), create_limit=(3, 0.4), queue_time=0.0, generation_time=0.0) as sim:
        a, b = Api(sim, "k1"), Api(sim, "k2")
        codes = [a.create(body()).json()["code"], b.create(body()).json()["code"], a.create(body()).json()["code"]]
        assert codes == [200, 200, 200]
        assert b.create(body()).json()["code"] == 429  # the other key shares the account's window
        time.sleep(0.45)
        assert a.create(body()).json()["code"] == 200  # the window moved on
        assert sim.count_429("createTask") == 1


def test_record_info_over_10_per_second_per_key() -> None:
    with Simulator(api_keys=("k1", "k2"), queue_time=0.0, generation_time=0.0) as sim:
        a, b = Api(sim, "k1"), Api(sim, "k2")
        task_id = a.new_task()
        codes = [a.info(task_id).json()["code"] for _ in range(12)]
        assert codes == [200] * 10 + [429] * 2
        assert b.info(task_id).json()["code"] == 200  # per key
        assert a.credit().json()["code"] == 200  # the credit endpoint has no documented limit
        assert sim.count_429("recordInfo") == 2 and sim.max_in_window("recordInfo", 1.0) == 13
        time.sleep(1.05)
        assert a.info(task_id).json()["code"] == 200


def test_query_limit_configurable_and_switch_at_run_time() -> None:
    with Simulator(query_limit=(2, 0.3)) as sim:
        api = Api(sim)
        assert [api.info("t").json()["code"] for _ in range(3)] == [422, 422, 429]
        sim.enforce_limits = False
        assert [api.info("t").json()["code"] for _ in range(5)] == [422] * 5
        sim.enforce_limits = True
        sim.query_limit = (1, 5.0)
        assert [api.info("t").json()["code"] for _ in range(2)] == [422, 429]


def test_limits_off_lets_bursts_through() -> None:
    with Simulator(enforce_limits=False, queue_time=0.0, generation_time=0.0) as sim:
        api = Api(sim)
        assert {api.create(body()).json()["code"] for _ in range(30)} == {200}
        assert {api.info("t").json()["code"] for _ in range(30)} == {422}
        assert sim.count_429() == 0 and sim.max_in_window("createTask", 10.0) == 30


def test_reset_counts_forgets_429s() -> None:
    with Simulator(query_limit=(1, 10.0)) as sim:
        api = Api(sim)
        api.info("t"), api.info("t")
        assert sim.count_429() == 1
        sim.reset_counts()
        assert sim.count_429() == 0 and sim.max_in_window("recordInfo", 1.0) == 0


@pytest.mark.parametrize(
    ("times", "window", "expected"),
    [([], 1.0, 0), ([0.0], 1.0, 1), ([0.0, 0.5, 0.99, 1.0, 1.2], 1.0, 4), ([3, 1, 2, 1.5], 1.0, 2),
     ([0.0, 0.2, 0.4], 0.5, 3), ([0.0, 1.0, 2.0], 1.0, 1)],
)
def test_max_in_window(times: list[float], window: float, expected: int) -> None:
    assert max_in_window(times, window) == expected


def test_cli_limit_options() -> None:
    args = build_parser().parse_args(["--create-limit", "5", "2", "--query-limit", "3", "1"])
    assert tuple(args.create_limit) == (5, 2) and tuple(args.query_limit) == (3, 1) and not args.no_limits
    defaults = build_parser().parse_args([])
    assert tuple(defaults.create_limit) == (20, 10.0) and tuple(defaults.query_limit) == (10, 1.0)
    assert build_parser().parse_args(["--no-limits"]).no_limits is True


def test_a_delayed_request_counts_against_the_limit_when_it_arrives() -> None:
    """A `delay` fault makes the answer late, not the arrival: the request is in the account's window from the
    moment it came, as the service counts it (counted after the delay, it would refuse requests that a client
    pacing by its own send times rightly sends once the window has moved on)."""
    with Simulator(create_limit=(2, 1.0), queue_time=0.0, generation_time=0.0) as sim:
        api = Api(sim)
        sim.inject("createTask", times=1, delay=0.6)
        t0 = time.monotonic()
        assert api.create(body()).json()["code"] == 200  # arrived at t0, answered at t0 + 0.6
        assert api.create(body()).json()["code"] == 200
        time.sleep(max(0.0, t0 + 1.05 - time.monotonic()))  # the window of the first arrival has passed
        assert api.create(body()).json()["code"] == 200  # counted at t0 + 0.6, this one would be refused
        assert sim.count_429("createTask") == 0
