"""Request fields, validation rules and the exact createTask body the simulator receives."""
from __future__ import annotations

import json

import pytest

from imagen4_jupyter import GenerationRequest, InvalidRequestError
from imagen4_jupyter.api.request import interpolate

RATIOS = ("1:1", "16:9", "9:16", "3:4", "4:3")


def sent_bodies(sim) -> list[dict]:
    return [json.loads(r.body) for r in sim.requests if r.endpoint == "createTask"]


# -- validation, checked over the wire: a rejected request sends nothing -------------------------

BAD_REQUESTS = [
    pytest.param(dict(prompt=""), "empty", id="prompt-empty"),
    pytest.param(dict(prompt="   \n\t "), "empty", id="prompt-whitespace"),
    pytest.param(dict(prompt=None), "empty", id="prompt-none"),
    pytest.param(dict(prompt=42), "text", id="prompt-not-text"),
    pytest.param(dict(prompt="x" * 5001), "5000", id="prompt-5001"),
    pytest.param(dict(prompt="a\x00b"), "NUL", id="prompt-nul"),
    pytest.param(dict(prompt="ok", negative_prompt="n" * 5001), "5000", id="negative-5001"),
    pytest.param(dict(prompt="ok", negative_prompt=3), "text", id="negative-not-text"),
    pytest.param(dict(prompt="ok", aspect_ratio="2:1"), "1:1, 16:9, 9:16, 3:4, 4:3", id="ratio-2:1"),
    pytest.param(dict(prompt="ok", aspect_ratio="16x9"), "16:9", id="ratio-16x9"),
    pytest.param(dict(prompt="ok", aspect_ratio=""), "one of", id="ratio-empty"),
    pytest.param(dict(prompt="ok", aspect_ratio="1:1:1"), "one of", id="ratio-1:1:1"),
    pytest.param(dict(prompt="ok", num_images=0), "1 to 4", id="n-0"),
    pytest.param(dict(prompt="ok", num_images=5), "1 to 4", id="n-5"),
    pytest.param(dict(prompt="ok", num_images=-1), "1 to 4", id="n-minus-1"),
    pytest.param(dict(prompt="ok", num_images="two"), "1 to 4", id="n-two"),
    pytest.param(dict(prompt="ok", num_images="0"), "1 to 4", id="n-str-0"),
    pytest.param(dict(prompt="ok", num_images="5"), "1 to 4", id="n-str-5"),
    pytest.param(dict(prompt="ok", num_images=""), "1 to 4", id="n-str-empty"),
    pytest.param(dict(prompt="ok", num_images="٣"), "1 to 4", id="n-arabic-digit"),
    pytest.param(dict(prompt="ok", num_images=True), "1 to 4", id="n-True"),
    pytest.param(dict(prompt="ok", num_images=2.5), "1 to 4", id="n-2.5"),
    pytest.param(dict(prompt="ok", num_images=2.0), "1 to 4", id="n-2.0"),
    pytest.param(dict(prompt="ok", num_images=[2]), "1 to 4", id="n-list"),
    pytest.param(dict(prompt="ok", seed="s" * 501), "500", id="seed-501"),
    pytest.param(dict(prompt="ok", seed=1.5), "seed", id="seed-float"),
    pytest.param(dict(prompt="ok", seed=True), "seed", id="seed-bool"),
    pytest.param(dict(prompt="ok", callback_url="javascript:alert(1)"), "http(s)", id="cb-javascript"),
    pytest.param(dict(prompt="ok", callback_url="ftp://example.com/x"), "http(s)", id="cb-ftp"),
    pytest.param(dict(prompt="ok", callback_url="file:///etc/passwd"), "http(s)", id="cb-file"),
    pytest.param(dict(prompt="ok", callback_url="https://"), "http(s)", id="cb-no-host"),
    pytest.param(dict(prompt="ok", callback_url="example.com/hook"), "http(s)", id="cb-no-scheme"),
    pytest.param(dict(prompt="ok", callback_url="https://exa mple.com/"), "http(s)", id="cb-space"),
    pytest.param(dict(prompt="ok", callback_url="https://u:p@example.com/"), "password", id="cb-credentials"),
    pytest.param(dict(prompt="ok", callback_url=123), "text", id="cb-not-text"),
]


@pytest.mark.parametrize("kwargs, says", BAD_REQUESTS)
def test_rejected_request_sends_nothing_and_says_what_to_fix(sim, client, kwargs, says):
    prompt = kwargs.pop("prompt")
    with pytest.raises(InvalidRequestError) as info:
        client.submit(prompt, **kwargs)
    assert says in str(info.value)
    with pytest.raises(InvalidRequestError):
        client.generate(prompt, timeout=1, **kwargs)
    assert sim.count("createTask") == 0
    assert sim.count() == 0


def test_prompt_too_long_says_by_how_much():
    with pytest.raises(InvalidRequestError, match="5003 characters.*Shorten it by 3"):
        GenerationRequest.create("p" * 5003)


def test_invalid_request_error_is_a_value_error():
    with pytest.raises(ValueError):
        GenerationRequest.create("")


# -- accepted values and the exact body ---------------------------------------------------------

def test_minimal_body_is_exact(sim, client):
    job = client.submit("a red fox")
    assert sent_bodies(sim) == [{"model": "google/imagen4",
                                 "input": {"prompt": "a red fox", "aspect_ratio": "1:1", "num_images": "1"}}]
    rec = sim.requests[0]
    assert rec.method == "POST" and rec.path == "/api/v1/jobs/createTask"
    assert rec.headers.get("Authorization") == "Bearer test-key-0123456789"
    assert "application/json" in rec.headers.get("Content-Type", "")
    assert job.task_id in sim.tasks
    job.wait(10)


def test_full_body_is_exact(sim, client):
    client.submit("a fox", negative_prompt="blur", aspect_ratio="16:9", num_images=3, seed=42,
                  callback_url="http://127.0.0.1:9/hook").wait(10)
    assert sent_bodies(sim) == [{
        "model": "google/imagen4",
        "callBackUrl": "http://127.0.0.1:9/hook",
        "input": {"prompt": "a fox", "negative_prompt": "blur", "aspect_ratio": "16:9",
                  "num_images": "3", "seed": "42"},
    }]
    body = sent_bodies(sim)[0]["input"]
    assert isinstance(body["num_images"], str) and isinstance(body["seed"], str)


@pytest.mark.parametrize("ratio", RATIOS)
def test_each_aspect_ratio_is_sent(sim, client, ratio):
    client.submit("x", aspect_ratio=ratio)
    assert sent_bodies(sim)[0]["input"]["aspect_ratio"] == ratio


@pytest.mark.parametrize("value, sent", [(1, "1"), (2, "2"), (3, "3"), (4, "4"), ("1", "1"), ("4", "4"),
                                          (" 2 ", "2")])
def test_num_images_int_or_numeric_string_is_sent_as_string(sim, client, value, sent):
    client.submit("x", num_images=value)
    assert sent_bodies(sim)[0]["input"]["num_images"] == sent


@pytest.mark.parametrize("value, sent", [("abc", "abc"), (7, "7"), (0, "0"), (-3, "-3"),
                                          ("s" * 500, "s" * 500), ("", None), (None, None)])
def test_seed_forms(sim, client, value, sent):
    client.submit("x", seed=value)
    inp = sent_bodies(sim)[0]["input"]
    if sent is None:
        assert "seed" not in inp
    else:
        assert inp["seed"] == sent


def test_prompt_limits_5000_ok_and_unicode_counted_in_characters(sim, client):
    client.submit("p" * 5000, negative_prompt="n" * 5000)
    client.submit("й" * 5000)  # 10000 bytes of UTF-8 but 5000 characters
    bodies = sent_bodies(sim)
    assert bodies[0]["input"]["prompt"] == "p" * 5000
    assert bodies[0]["input"]["negative_prompt"] == "n" * 5000
    assert bodies[1]["input"]["prompt"] == "й" * 5000


@pytest.mark.parametrize("negative", [None, ""])
def test_no_negative_prompt_key_when_none(sim, client, negative):
    client.submit("x", negative_prompt=negative)
    assert "negative_prompt" not in sent_bodies(sim)[0]["input"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cb", "https://example.com/api/callback?x=1"])
def test_callback_url_http_and_https_accepted(sim, client, url):
    client.submit("x", callback_url=url)
    assert sent_bodies(sim)[0]["callBackUrl"] == url


def test_no_callback_key_when_not_given(sim, client):
    client.submit("x", callback_url="")
    assert "callBackUrl" not in sent_bodies(sim)[0]


def test_numpy_like_integer_is_accepted():
    class IndexOnly:
        def __index__(self):
            return 2

    assert GenerationRequest.create("x", num_images=IndexOnly()).num_images == 2


def test_defaults_and_payload_roundtrip():
    req = GenerationRequest.create("a cat", seed=5, num_images="2", negative_prompt="dog")
    assert (req.aspect_ratio, req.num_images, req.seed) == ("1:1", 2, "5")
    assert GenerationRequest.from_payload(req.to_payload()) == req
    assert GenerationRequest.from_dict(req.to_dict()) == req
    assert req.key() == GenerationRequest.create("a cat", seed="5", num_images=2, negative_prompt="dog").key()
    assert req.key() != req.replace(seed="6").key()
    # the callback URL does not change which images come out
    assert req.key() == req.replace(callback_url="https://example.com/h").key()


# -- interpolation --------------------------------------------------------------------------------

def test_interpolate_names_attributes_and_escapes():
    class Obj:
        colour = "blue"

    ns = {"animal": "fox", "o": Obj()}
    assert interpolate("a {animal} in {o.colour}", ns) == "a fox in blue"
    assert interpolate("{{animal}} and {\"json\": 1} and { x }", ns) == "{animal} and {\"json\": 1} and { x }"


@pytest.mark.parametrize("text, says", [("{missing}", "missing"), ("{o.nope}", "nope"), ("{o._secret}", "_secret")])
def test_interpolate_unknown_names_are_clear(text, says):
    class Obj:
        _secret = 1

    with pytest.raises(InvalidRequestError, match=says):
        interpolate(text, {"o": Obj()})
