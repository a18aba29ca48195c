"""The Imagen 4 family: each model's exact createTask body over the wire, and its validation (nothing sent)."""
from __future__ import annotations

import hashlib
import json

import pytest

from imagen4_jupyter import GenerationRequest, InvalidRequestError
from imagen4_jupyter.api.models import DEFAULT_MODEL, MODELS, model_spec


def sent_bodies(sim) -> list[dict]:
    return [json.loads(r.body) for r in sim.requests if r.endpoint == "createTask"]


@pytest.mark.parametrize("model, body", [
    ("standard", {"model": "google/imagen4",
                  "input": {"prompt": "a fox", "aspect_ratio": "1:1", "num_images": "2", "seed": "7"}}),
    ("fast", {"model": "google/imagen4-fast",
              "input": {"prompt": "a fox", "aspect_ratio": "16:9", "num_images": "2", "seed": 7}}),
    ("ultra", {"model": "google/imagen4-ultra",
               "input": {"prompt": "a fox", "aspect_ratio": "1:1", "seed": "7"}}),
])
def test_each_models_exact_body(sim, client, model, body):
    n = 1 if model == "ultra" else 2
    job = client.submit_request(GenerationRequest.create("a fox", seed="7", num_images=n, model=model), queue=False)
    assert sent_bodies(sim) == [body]
    result = job.wait(10)
    assert len(result.images) == n
    assert client.get_task(job.task_id).model == body["model"]


def test_full_names_and_short_names_mean_the_same_model():
    for spec in MODELS.values():
        assert model_spec(spec.short) is spec and model_spec(spec.name) is spec
        assert model_spec(spec.short.upper()) is spec
    assert model_spec(None).name == DEFAULT_MODEL


def test_the_models_default_ratio_applies_only_where_none_was_given():
    assert GenerationRequest.create("x", model="fast").aspect_ratio == "16:9"
    assert GenerationRequest.create("x", model="fast", aspect_ratio="1:1").aspect_ratio == "1:1"
    assert GenerationRequest.create("x", model="ultra").aspect_ratio == "1:1"
    assert GenerationRequest.create("x").aspect_ratio == "1:1"


@pytest.mark.parametrize("kwargs, says", [
    (dict(model="ultra", num_images=2), ["Ultra", "one image per task", "seed", "batch"]),
    (dict(model="fast", seed="abc"), ["Fast", "whole-number seed", "'abc'"]),
    (dict(model="fast", seed="-3"), ["whole-number seed"]),
    (dict(model="fast", seed=str(2**31)), ["2147483647"]),
    (dict(model="imagen3"), ["Unknown model", "fast", "ultra", "standard"]),
    (dict(model=3), ["model"]),
])
def test_validation_per_model_sends_nothing(sim, client, kwargs, says):
    with pytest.raises(InvalidRequestError) as info:
        client.submit_request(GenerationRequest.create("a fox", **kwargs))
    for word in says:
        assert word in str(info.value)
    assert sim.count() == 0


def test_digits_become_an_integer_seed_for_fast():
    req = GenerationRequest.create("x", model="fast", seed="007")
    assert req.to_payload()["input"]["seed"] == 7
    assert GenerationRequest.create("x", model="fast", seed=7) == req


def test_the_model_is_part_of_the_reuse_key_and_the_record():
    keys = {GenerationRequest.create("x", seed="1", model=m).key() for m in MODELS}
    assert len(keys) == 3
    req = GenerationRequest.create("x", seed="1", model="ultra")
    assert GenerationRequest.from_dict(req.to_dict()) == req
    assert GenerationRequest.from_payload(req.to_payload()) == req


def test_standard_keys_are_the_ones_older_versions_wrote():
    req = GenerationRequest.create("a fox", seed="7", aspect_ratio="16:9", num_images=2)
    old = {"prompt": "a fox", "negative_prompt": None, "aspect_ratio": "16:9", "num_images": 2, "seed": "7"}
    expected = hashlib.sha256(json.dumps(old, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]
    assert req.key() == expected
    assert GenerationRequest.from_dict(old) == req  # a record without `model` is a standard one


def test_submit_and_generate_take_the_model(sim, client):
    result = client.generate("a fox", model="ultra", seed=5, timeout=10)
    assert sent_bodies(sim)[-1]["model"] == "google/imagen4-ultra" and "num_images" not in sent_bodies(sim)[-1]["input"]
    assert result.request.model == "google/imagen4-ultra"
    job = client.submit("a fox", model="fast")
    assert sent_bodies(sim)[-1]["input"]["aspect_ratio"] == "16:9"
    job.result(10)
