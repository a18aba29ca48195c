"""The Imagen 4 family in the simulator: per-model schemas, defaults, speeds, prices; over real HTTP."""

from __future__ import annotations

import inspect
import io
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from test_simulator import SMALL, Api

from imagen4_jupyter.simulator import MODELS, Simulator

STANDARD, FAST, ULTRA = "google/imagen4", "google/imagen4-fast", "google/imagen4-ultra"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.02, enforce_limits=False) as s:
        yield s


@pytest.fixture
def api(sim: Simulator) -> Api:
    return Api(sim)


def create(api: Api, model: str, **inp: Any) -> dict[str, Any]:
    return api.create({"model": model, "input": {"prompt": "a red fox", **inp}}).json()


@pytest.mark.parametrize(("model", "size"), [(STANDARD, (64, 64)), (FAST, (88, 48)), (ULTRA, (64, 64))])
def test_each_model_with_its_default_ratio_and_record_info_names_it(api: Api, model: str, size: tuple) -> None:
    answer = create(api, model)
    assert answer["code"] == 200, answer
    task_id = answer["data"]["taskId"]
    data = api.wait_done(task_id)
    assert data["model"] == model and json.loads(data["param"])["model"] == model
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(urls) == 1
    assert Image.open(io.BytesIO(api.image(urls[0]).content)).size == size


@pytest.mark.parametrize(
    ("model", "inp", "needle"),
    [
        (FAST, {"seed": "42"}, "seed must be an integer"),
        (FAST, {"seed": 4.5}, "seed must be an integer"),
        (FAST, {"seed": True}, "seed must be an integer"),
        (STANDARD, {"seed": 42}, "seed must be a string"),
        (ULTRA, {"seed": 42}, "seed must be a string"),
        (ULTRA, {"seed": "s" * 501}, "too long"),
        (ULTRA, {"num_images": "1"}, "num_images"),
        (ULTRA, {"num_images": "2"}, "one image per task"),
        (FAST, {"num_images": 2}, "num_images"),
        (FAST, {"aspect_ratio": "2:1"}, "aspect_ratio"),
        (ULTRA, {"prompt": "p" * 5001}, "prompt"),
        ("google/imagen4-turbo", {}, "model must be one of"),
        ("google/imagen3", {}, "google/imagen4-ultra"),
    ],
)
def test_schema_breaks_answer_422_and_charge_nothing(api: Api, model: str, inp: dict[str, Any], needle: str) -> None:
    before = api.sim.credits
    answer = create(api, model, **inp)
    assert answer["code"] == 422 and answer["data"] is None
    assert needle in answer["msg"], answer["msg"]
    assert api.sim.tasks == {} and api.sim.credits == before and api.sim.charges == []


def test_valid_seeds_and_counts_per_model(api: Api) -> None:
    assert create(api, FAST, seed=42, num_images="4")["code"] == 200
    assert create(api, FAST, seed=0)["code"] == 200
    assert create(api, STANDARD, seed="s" * 500, num_images="3")["code"] == 200
    assert create(api, ULTRA, seed="abc", negative_prompt="blur", aspect_ratio="9:16")["code"] == 200
    counts = sorted(len(t.result_urls) for t in api.sim.tasks.values() if api.wait_done(t.task_id))
    assert counts == [1, 1, 3, 4]


def test_integer_seed_makes_fast_images_reproducible(api: Api) -> None:
    def first(seed: int) -> bytes:
        task_id = create(api, FAST, seed=seed)["data"]["taskId"]
        return api.image(api.urls(task_id)[0]).content

    assert first(7) == first(7) != first(8)
    assert first(0) == first(0)  # 0 is a seed, not "no seed"


def test_relative_speeds() -> None:
    with Simulator(queue_time=0.0, generation_time=1.0, enforce_limits=False) as sim:
        api = Api(sim)
        durations = {m: sim.task(create(api, m)["data"]["taskId"]).generation_duration for m in MODELS}
    assert durations == {STANDARD: 1.0, FAST: 0.5, ULTRA: 1.6}
    assert durations[FAST] < durations[STANDARD] < durations[ULTRA]


def test_prices_per_model_and_the_ledger() -> None:
    with Simulator(credits=30, enforce_limits=False) as sim:
        api = Api(sim)
        ids = [create(api, m, num_images="4")["data"]["taskId"] for m in (FAST, STANDARD)]
        ids.append(create(api, ULTRA)["data"]["taskId"])
        assert [tuple(c) for c in sim.charges] == [(ids[0], FAST, 4), (ids[1], STANDARD, 6), (ids[2], ULTRA, 12)]
        assert api.credit().json()["data"] == 8
        refused = create(api, ULTRA)
        assert refused["code"] == 402 and len(sim.charges) == 3 and sim.credits == 8
        assert create(api, STANDARD)["code"] == 200 and sim.credits == 2  # down to 2, never below 0
        sim.prices[FAST] = 2.5
        assert create(api, FAST)["code"] == 402  # 2 left: it would go negative
        sim.prices[FAST] = 2
        assert create(api, FAST)["code"] == 200 and api.credit().json()["data"] == 0


def test_custom_prices() -> None:
    with Simulator(credits=10, prices={STANDARD: 1, FAST: 1, ULTRA: 10}) as sim:
        api = Api(sim)
        assert create(api, ULTRA)["code"] == 200 and sim.credits == 0
        assert create(api, FAST)["code"] == 402


def test_missing_field_quirk_answers_500_when_switched_on() -> None:
    with Simulator(quirk_500_on_missing_field=True) as sim:
        api = Api(sim)
        for broken in ({"input": {"prompt": "a"}}, {"model": STANDARD}, {"model": STANDARD, "input": {}}):
            assert api.create(broken).json() == {"code": 500, "msg": "This field is required", "data": None}
        assert create(api, STANDARD, seed=5)["code"] == 422  # present but wrong: still a 422
        assert sim.tasks == {} and sim.charges == []
    with Simulator() as sim:  # off by default
        assert Api(sim).create({"model": STANDARD}).json()["code"] == 422


def test_models_table_matches_the_docs() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "simulator.md").read_text(encoding="utf-8")
    for name, spec in MODELS.items():
        row = f"| `{name}` | `{spec.default_aspect_ratio}` |"
        assert row in text, row
        line = text[text.index(row):].splitlines()[0]
        assert f"| {spec.speed:g}x |" in line and f"| {spec.credits:g} |" in line, line


# -- task durations: realistic by default, documented, scaled by time_scale --------------------------------------
def documented_durations() -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """docs/simulator.md's "Task durations" table: model -> ((queue min, max), (generation min, max))."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "simulator.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(google/[\w-]+)` \| ([\d.]+)-([\d.]+) s \| ([\d.]+)-([\d.]+) s \| ([\d.]+) s \|$",
                      text, re.MULTILINE)
    table = {m: ((float(q0), float(q1)), (float(g0), float(g1))) for m, q0, q1, g0, g1, _ in rows}
    for m, *_, mean in rows:  # the "whole task, mean" column agrees with the ranges
        (q0, q1), (g0, g1) = table[m]
        assert float(mean) == pytest.approx((q0 + q1 + g0 + g1) / 2, abs=0.05), m
    return table


def planned(sim: Simulator, per_model: int) -> dict[str, tuple[list[float], list[float]]]:
    """Create `per_model` tasks of each model and read their planned (queue, generation) seconds without waiting."""
    api = Api(sim)
    out: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in MODELS}
    for _ in range(per_model):
        for m in MODELS:
            task = sim.task(create(api, m)["data"]["taskId"])
            out[m][0].append(task.queue_duration)
            out[m][1].append(task.generation_duration)
    return out


def test_default_durations_are_realistic_and_what_the_docs_say() -> None:
    docs = documented_durations()
    assert set(docs) == set(MODELS)
    with Simulator(enforce_limits=False, random_seed=3) as sim:  # time_scale=1: nothing waits for the tasks
        seen = planned(sim, 150)
        assert all(t.state_at(t.create_mono + 0.3) == "waiting" for t in sim.tasks.values())  # a real queue first
    means = {}
    for m, (queue, gen) in seen.items():
        for samples, (low, high) in ((queue, docs[m][0]), (gen, docs[m][1])):
            mean = statistics.fmean(samples)
            assert low - 1e-9 <= min(samples) and max(samples) <= high + 1e-9, (m, low, high)
            assert mean == pytest.approx((low + high) / 2, rel=0.06), (m, mean)
            assert min(samples) < low + (high - low) * 0.1 and max(samples) > high - (high - low) * 0.1  # spread
        means[m] = statistics.fmean(gen)
    assert docs[STANDARD][0] == (1.0, 4.0) and docs[STANDARD][1] == (6.0, 12.0)  # a few s queued, 5-15 s generating
    assert docs[FAST][0] == docs[STANDARD][0] == docs[ULTRA][0]  # one queue for all models
    assert means[FAST] < means[STANDARD] < means[ULTRA]
    assert means[FAST] == pytest.approx(means[STANDARD] * MODELS[FAST].speed, rel=0.1)


def test_time_scale_multiplies_every_task_duration() -> None:
    with Simulator(enforce_limits=False, random_seed=5) as real:
        full = planned(real, 20)
    with Simulator(enforce_limits=False, random_seed=5, time_scale=0.01, image_scale=SMALL) as sim:
        scaled = planned(sim, 20)
        for m in MODELS:
            for got, want in zip(scaled[m], full[m], strict=True):
                assert got == pytest.approx([d * 0.01 for d in want])
        sim.next_outcomes.append({"queue_time": 30, "generation_time": 50})  # scripted durations scale too
        api = Api(sim)
        task = sim.task(create(api, STANDARD)["data"]["taskId"])
        assert (task.queue_duration, task.generation_duration) == pytest.approx((0.3, 0.5))
        sim.time_scale = 0.001  # a plain attribute: later tasks take it
        done = api.wait_done(create(api, ULTRA)["data"]["taskId"], timeout=2.0)
        assert done["state"] == "success" and 1 <= done["costTime"] <= (4 + 12 * 1.6)  # ms: 1-4 s + 9.6-19.2 s
    with Simulator(queue_time=(1.0, 1.0), generation_time=2.0, time_scale=0.5, enforce_limits=False) as given:
        task = given.task(create(Api(given), FAST)["data"]["taskId"])
        assert (task.queue_duration, task.generation_duration) == pytest.approx((0.5, 2.0 * 0.5 * 0.5))
    with pytest.raises(ValueError, match="time_scale"):
        Simulator(time_scale=-1)


def test_cli_and_class_share_the_defaults_and_the_time_scale_flag_works() -> None:
    from imagen4_jupyter.simulator.__main__ import build_parser

    params = inspect.signature(Simulator).parameters
    args = build_parser().parse_args([])
    assert tuple(args.queue_time) == params["queue_time"].default == (1.0, 4.0)
    assert tuple(args.generation_time) == params["generation_time"].default == (6.0, 12.0)
    assert args.time_scale == params["time_scale"].default == 1.0
    assert build_parser().parse_args(["--time-scale", "0.25"]).time_scale == 0.25
    proc = subprocess.Popen([sys.executable, "-m", "imagen4_jupyter.simulator", "--key", "cli-key", "--time-scale",
                             "0.001", "--image-scale", "0.0625", "--seed", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = re.match(r"Apikley simulator listening on (\S+) ", proc.stdout.readline()).group(1)
        s = requests.Session()
        s.trust_env = False
        s.headers["Authorization"] = "Bearer cli-key"
        created = s.post(url + "/api/v1/jobs/createTask", json={"model": STANDARD, "input": {"prompt": "fox"}}).json()
        task_id = created["data"]["taskId"]
        deadline, data = time.monotonic() + 3.0, {}
        while time.monotonic() < deadline and data.get("state") != "success":
            time.sleep(0.02)
            data = s.get(url + "/api/v1/jobs/recordInfo", params={"taskId": task_id}).json()["data"]
        assert data["state"] == "success", data  # 7-16 s of task at a thousandth: 7-16 ms
        assert 7 <= data["costTime"] <= 16
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    bad = subprocess.run([sys.executable, "-m", "imagen4_jupyter.simulator", "--time-scale", "-1"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--time-scale" in bad.stderr
