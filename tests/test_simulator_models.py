"""The Imagen 4 family in the simulator: per-model schemas, defaults, speeds, prices; over real HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_simulator import SMALL, Api

from imagen4_jupyter.simulator import MODELS, Simulator

STANDARD, FAST, ULTRA = "google/imagen4", "google/imagen4-fast", "google/imagen4-ultra"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(image_scale=SMALL, generation_time=0.02, enforce_limits=False) as s:
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
    with Simulator(generation_time=1.0, enforce_limits=False) as sim:
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
