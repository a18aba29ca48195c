"""Tests of the Apikley imagen4 simulator, driven over real loopback HTTP."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from imagen4_jupyter.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]
MODEL = "google/imagen4"
SMALL = 0.0625
SIZES = {"1:1": (64, 64), "16:9": (88, 48), "9:16": (48, 88), "4:3": (80, 56), "3:4": (56, 80)}


# -- helpers -------------------------------------------------------------------
class Api:
    """Tiny test client: a requests.Session bound to a simulator."""

    def __init__(self, sim: Simulator, key: str | None = None) -> None:
        self.sim = sim
        self.s = requests.Session()
        self.s.trust_env = False
        self.key = sim.api_key if key is None else key

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def create(self, body: Any = None, raw: bytes | None = None, **kw: Any) -> requests.Response:
        url = self.sim.url + "/api/v1/jobs/createTask"
        if raw is not None:
            return self.s.post(url, data=raw, headers={**self.headers(), "Content-Type": "application/json"}, **kw)
        return self.s.post(url, json=body, headers=self.headers(), **kw)

    def new_task(self, **inp: Any) -> str:
        body = {"model": MODEL, "input": {"prompt": "a red fox", **inp}}
        r = self.create(body)
        assert r.status_code == 200 and r.json()["code"] == 200, r.text
        return r.json()["data"]["taskId"]

    def info(self, task_id: str | None, **kw: Any) -> requests.Response:
        params = {} if task_id is None else {"taskId": task_id}
        return self.s.get(self.sim.url + "/api/v1/jobs/recordInfo", params=params, headers=self.headers(), **kw)

    def data(self, task_id: str) -> dict[str, Any]:
        body = self.info(task_id).json()
        assert body["code"] == 200, body
        return body["data"]

    def credit(self, **kw: Any) -> requests.Response:
        return self.s.get(self.sim.url + "/api/v1/chat/credit", headers=self.headers(), **kw)

    def wait_done(self, task_id: str, timeout: float = 5.0, interval: float = 0.01) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.data(task_id)
            if data["state"] in ("success", "fail"):
                return data
            time.sleep(interval)
        raise AssertionError(f"task {task_id} did not finish")

    def urls(self, task_id: str) -> list[str]:
        return json.loads(self.wait_done(task_id)["resultJson"])["resultUrls"]

    def image(self, url: str, **kw: Any) -> requests.Response:
        return self.s.get(url, **kw)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """Fast, and without the documented limits (tests/test_simulator_limits.py checks those)."""
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=(0.02, 0.02), enforce_limits=False) as s:
        yield s


@pytest.fixture
def api(sim: Simulator) -> Api:
    return Api(sim)


def body(**inp: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": {"prompt": "a red fox", **inp}}


# -- createTask and validation -----------------------------------------------------
def test_create_task_envelope_and_unique_ids(api: Api) -> None:
    ids = set()
    for _ in range(5):
        r = api.create(body())
        assert r.status_code == 200
        payload = r.json()
        assert payload["code"] == 200 and payload["msg"] == "success" and "message" not in payload
        assert re.fullmatch(r"task_google_\d{13}\d+", payload["data"]["taskId"])
        ids.add(payload["data"]["taskId"])
    assert len(ids) == 5 and set(api.sim.tasks) == ids


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (body(num_images=2), "num_images"),
        (body(num_images="5"), "num_images"),
        (body(num_images="0"), "num_images"),
        (body(aspect_ratio="2:1"), "aspect_ratio"),
        (body(aspect_ratio="16x9"), "aspect_ratio"),
        ({"model": MODEL, "input": {"prompt": "x" * 5001}}, "prompt"),
        ({"model": MODEL, "input": {"prompt": ""}}, "prompt"),
        ({"model": MODEL, "input": {"prompt": 42}}, "prompt"),
        ({"model": MODEL, "input": {}}, "prompt"),
        (body(negative_prompt="n" * 5001), "negative_prompt"),
        (body(seed="s" * 501), "seed"),
        (body(seed=42), "seed"),
        (body(style="anime"), "style"),
        ({"input": {"prompt": "a"}}, "model"),
        ({"model": "google/imagen3", "input": {"prompt": "a"}}, "model"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": "a fox"}, "input"),
        ({**body(), "callbackUrl": "https://x.example/cb"}, "callbackUrl"),
        ({**body(), "callBackUrl": "not a uri"}, "callBackUrl"),
        ({**body(), "callBackUrl": 5}, "callBackUrl"),
        ([1, 2], "object"),
    ],
)
def test_validation_rejects(api: Api, bad: Any, needle: str) -> None:
    before = api.sim.credits
    r = api.create(bad)
    assert r.status_code == 200
    payload = r.json()
    assert payload["code"] == 422 and payload["data"] is None
    assert needle in payload["msg"]
    assert api.sim.tasks == {} and api.sim.credits == before


def test_invalid_json_is_422(api: Api) -> None:
    r = api.create(raw=b'{"model": "google/imagen4", "input": {')
    assert r.status_code == 200 and r.json()["code"] == 422 and "JSON" in r.json()["msg"]


@pytest.mark.parametrize("ratio", list(SIZES))
@pytest.mark.parametrize("n", ["1", "2", "3", "4"])
def test_validation_accepts_all_enum_values(api: Api, ratio: str, n: str) -> None:
    api.new_task(aspect_ratio=ratio, num_images=n, negative_prompt="", seed="")


def test_validation_accepts_limits(api: Api) -> None:
    api.new_task(seed="s" * 500, negative_prompt="n" * 5000)
    r = api.create({"model": MODEL, "callBackUrl": "https://x.example/cb", "input": {"prompt": "p" * 5000}})
    assert r.json()["code"] == 200


# -- auth, routing -------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdC1rZXk=", "Bearer ", "test-key"])
def test_auth_rejected_everywhere(sim: Simulator, header: str | None) -> None:
    s = requests.Session()
    s.trust_env = False
    headers = {} if header is None else {"Authorization": header}
    responses = [
        s.post(sim.url + "/api/v1/jobs/createTask", json=body(), headers=headers),
        s.get(sim.url + "/api/v1/jobs/recordInfo", params={"taskId": "x"}, headers=headers),
        s.get(sim.url + "/api/v1/chat/credit", headers=headers),
    ]
    for r in responses:
        assert r.status_code == 200  # as on the live service: only the body says 401
        assert r.json()["code"] == 401 and r.json()["msg"].startswith("Unauthorized")
    assert sim.tasks == {}


def test_auth_http_401_by_option() -> None:
    with Simulator(auth_http_status=401) as sim:
        r = requests.get(sim.url + "/api/v1/chat/credit", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["code"] == 401
        assert Api(sim).credit().status_code == 200


def test_any_key_mode_and_image_needs_no_auth() -> None:
    with Simulator(api_keys=None, image_scale=SMALL, queue_time=0.0, generation_time=0.01) as sim:
        assert sim.api_key == "test-key"
        api = Api(sim, key="whatever-123")
        task_id = api.new_task()
        url = api.urls(task_id)[0]
        assert requests.get(url).status_code == 200  # no Authorization header
        r = requests.get(sim.url + "/api/v1/chat/credit", headers={"Authorization": "Bearer "})
        assert r.json()["code"] == 401


def test_unknown_path_and_method(api: Api) -> None:
    for r in (
        api.s.get(api.sim.url + "/api/v1/nope", headers=api.headers()),
        api.s.get(api.sim.url + "/api/v1/jobs/createTask", headers=api.headers()),
    ):
        assert r.status_code == 404
        assert r.json() == {"code": 404, "msg": "endpoint not found", "data": None}
    assert api.sim.count("other") == 2


# -- recordInfo ---------------------------------------------------------------------------
def test_state_progression_and_times() -> None:
    with Simulator(queue_time=(0.25, 0.25), generation_time=(0.2, 0.2), image_scale=SMALL, enforce_limits=False) as sim:
        api = Api(sim)
        task_id = api.new_task(num_images="2")
        seen: list[str] = []
        updates: dict[str, int] = {}
        while True:
            data = api.data(task_id)
            if not seen or seen[-1] != data["state"]:
                seen.append(data["state"])
                updates[data["state"]] = data["updateTime"]
            if data["state"] in ("success", "fail"):
                break
            assert "costTime" not in data and data["completeTime"] is None and data["resultJson"] == ""
            time.sleep(0.01)
        assert seen == ["waiting", "queuing", "generating", "success"]
        assert updates["waiting"] < updates["queuing"] < updates["generating"] < updates["success"]
        assert data["createTime"] == updates["waiting"]
        assert data["completeTime"] == data["updateTime"] and data["costTime"] == 450
        assert "progress" in data  # an extra field clients must tolerate
        assert sim.task(task_id).state == "success" and len(sim.task(task_id).result_urls) == 2


def test_record_info_double_encoding_and_spelling(api: Api) -> None:
    sent = body(aspect_ratio="16:9", num_images="3", seed="abc", negative_prompt="blur")
    task_id = api.create(sent).json()["data"]["taskId"]
    r = api.info(task_id)
    payload = r.json()
    assert "message" in payload and "msg" not in payload and payload["message"] == "success"
    data = api.wait_done(task_id)
    assert isinstance(data["param"], str) and json.loads(data["param"]) == sent
    assert isinstance(data["resultJson"], str)
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(urls) == 3 and all(u.startswith(api.sim.url + "/files/") and u.endswith(".png") for u in urls)
    assert data["failCode"] == "" and data["failMsg"] == "" and data["model"] == MODEL
    assert data["taskId"] == task_id


def test_record_info_unknown_and_missing(api: Api) -> None:
    unknown = api.info("task_google_0")
    assert unknown.status_code == 200 and unknown.json() == {"code": 422, "msg": "recordInfo is null", "data": None}
    missing = api.info(None)
    assert missing.status_code == 400 and missing.json()["code"] == 400 and "taskId" in missing.json()["msg"]
    blank = api.info("  ")
    assert blank.status_code == 400 and blank.json()["code"] == 400


def test_record_info_unknown_404_by_option() -> None:
    with Simulator(unknown_task_code=404) as sim:
        assert Api(sim).info("task_google_0").json() == {"code": 404, "message": "task not found", "data": None}
    with pytest.raises(ValueError):
        Simulator(unknown_task_code=500)


def test_fail_outcome(api: Api) -> None:
    api.sim.next_outcomes.append({"fail": ("500", "Internal generation error")})
    failed = api.new_task()
    ok = api.new_task()
    data = api.wait_done(failed)
    assert data["state"] == "fail" and data["failCode"] == "500" and data["failMsg"] == "Internal generation error"
    assert data["resultJson"] == "" and "costTime" in data
    assert api.wait_done(ok)["state"] == "success"
    assert api.sim.task(failed).fail_msg == "Internal generation error"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"result_json": "not json"}, "not json"),
        ({"result_json": '{"foo": 1}'}, '{"foo": 1}'),
        ({"result_urls": []}, '{"resultUrls": []}'),
    ],
)
def test_result_overrides(api: Api, override: dict[str, Any], expected: str) -> None:
    api.sim.next_outcomes.append(override)
    assert api.wait_done(api.new_task())["resultJson"] == expected


def test_outcome_generation_time_override_and_seeded_durations() -> None:
    spreads = []
    for _ in range(2):
        with Simulator(queue_time=0.0, generation_time=(0.01, 0.5), random_seed=7, image_scale=SMALL) as sim:
            api = Api(sim)
            sim.next_outcomes.append({"generation_time": 3.0})
            first = api.new_task()
            assert sim.task(first).generation_duration == 3.0
            spreads.append([sim.task(api.new_task()).generation_duration for _ in range(3)])
    assert spreads[0] == spreads[1] and len(set(spreads[0])) == 3


# -- images -----------------------------------------------------------------------------
def test_images_dimensions_per_ratio(api: Api) -> None:
    for ratio, size in SIZES.items():
        url = api.urls(api.new_task(aspect_ratio=ratio))[0]
        r = api.image(url)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
        assert int(r.headers["Content-Length"]) == len(r.content)
        assert Image.open(io.BytesIO(r.content)).size == size


def test_full_size_image_is_realistic() -> None:
    with Simulator(queue_time=0.0, generation_time=0.0) as sim:
        api = Api(sim)
        url = api.urls(api.new_task(aspect_ratio="16:9", seed="1"))[0]
        start = time.perf_counter()
        content = api.image(url).content
        assert time.perf_counter() - start < 1.0
        img = Image.open(io.BytesIO(content))
        assert img.size == (1408, 768) and img.format == "PNG"
        assert len(content) < 2_000_000  # not noise
        assert len(set(img.convert("L").resize((16, 16)).tobytes())) > 8  # not a flat colour


def test_images_deterministic_by_seed(api: Api) -> None:
    def fetch(**inp: Any) -> list[bytes]:
        return [api.image(u).content for u in api.urls(api.new_task(num_images="2", **inp))]

    a1, a2 = fetch(seed="42"), fetch(seed="42")
    assert a1 == a2 and a1[0] != a1[1]
    assert fetch(seed="43")[0] != a1[0]
    assert fetch(seed="42", prompt="a blue fox")[0] != a1[0]
    assert fetch(seed="")[0] != fetch(seed="")[0]
    assert fetch()[0] != fetch()[0]


def test_image_404s_and_expiry() -> None:
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.01, url_ttl=0.3) as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        assert api.image(url).status_code == 200
        assert api.image(url.replace("/1.png", "/2.png")).status_code == 404
        assert api.image(sim.url + "/files/notatoken/1.png").status_code == 404
        time.sleep(0.35)
        assert api.image(url).status_code == 404
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=5.0) as sim:
        api = Api(sim)
        task = sim.task(api.new_task())
        assert api.image(task.image_urls[0]).status_code == 404  # not finished yet


# -- faults -------------------------------------------------------------------------------
def test_fault_code_with_status_and_retry_after(api: Api) -> None:
    api.sim.inject("createTask", code=429, http_status=503, retry_after=2)
    r = api.create(body())
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert r.json()["code"] == 429 and r.json()["msg"] and r.json()["data"] is None
    assert api.sim.tasks == {}
    assert api.create(body()).json()["code"] == 200  # only once


@pytest.mark.parametrize("code", [401, 402, 404, 422, 429, 455, 500, 501, 505])
def test_fault_every_documented_code(api: Api, code: int) -> None:
    api.sim.inject("credit", code=code)
    r = api.credit()
    assert r.status_code == 200 and r.json()["code"] == code and r.json()["msg"]


def test_fault_code_on_record_info_uses_message(api: Api) -> None:
    api.sim.inject("recordInfo", code=455)
    payload = api.info("x").json()
    assert payload["code"] == 455 and payload["message"]


def test_fault_html(api: Api) -> None:
    api.sim.inject("recordInfo", http_status=502, html=True)
    r = api.info("x")
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html") and "502" in r.text
    with pytest.raises(ValueError):
        r.json()


def test_fault_delay(api: Api) -> None:
    api.sim.inject("credit", delay=0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.credit(timeout=0.15)
    assert api.credit(timeout=2).json()["code"] == 200


def test_fault_drop_creates_nothing(api: Api) -> None:
    api.sim.inject("createTask", drop=True)
    before = api.sim.credits
    with pytest.raises(requests.exceptions.ConnectionError):
        api.create(body())
    assert api.sim.tasks == {} and api.sim.credits == before and api.sim.count("createTask") == 1


def test_fault_drop_after_creates_and_bills(api: Api) -> None:
    api.sim.inject("createTask", drop_after=True)
    before = api.sim.credits
    with pytest.raises(requests.exceptions.ConnectionError):
        api.create(body(num_images="2"))
    assert len(api.sim.tasks) == 1 and api.sim.credits == before - 6  # google/imagen4: 6 credits per task


def test_fault_malformed(api: Api) -> None:
    api.sim.inject("createTask", malformed=True)
    r = api.create(body())
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    url = api.urls(api.new_task())[0]
    api.sim.inject("image", malformed=True)
    r = api.image(url)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content)
    with pytest.raises(OSError):
        Image.open(io.BytesIO(r.content)).load()


def test_fault_truncate_image(api: Api) -> None:
    url = api.urls(api.new_task())[0]
    api.sim.inject("image", truncate=True)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        api.image(url)
    assert Image.open(io.BytesIO(api.image(url).content)).size == (64, 64)


def test_fault_redirect_content_type_expired(api: Api) -> None:
    url = api.urls(api.new_task())[0]
    api.sim.inject("image", redirect="http://other.invalid/x.png")
    r = api.image(url, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "http://other.invalid/x.png"
    api.sim.inject("image", content_type="text/html")
    r = api.image(url)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html" and r.content[:4] == b"\x89PNG"
    api.sim.inject("image", expired=True)
    assert api.image(url).status_code == 404
    assert api.image(url).status_code == 200


def test_fault_times_wildcard_and_clear(api: Api) -> None:
    api.sim.inject("*", times=None, code=500)
    for _ in range(3):
        assert api.credit().json()["code"] == 500
        assert api.info("x").json()["code"] == 500
    assert api.sim.faults[0].hits == 6
    api.sim.clear_faults()
    assert api.credit().json()["code"] == 200
    api.sim.inject("credit", times=2, code=455)
    assert [api.credit().json()["code"] for _ in range(3)] == [455, 455, 200]


def test_inject_rejects_nonsense(sim: Simulator) -> None:
    for bad in ({"code": 429, "drop": True}, {"explode": True}, {}, {"code": 418}):
        with pytest.raises(ValueError):
            sim.inject("credit", **bad)
    with pytest.raises(ValueError):
        sim.inject("nowhere", code=500)


# -- rate limit, credits ----------------------------------------------------------------------
def test_rate_limit() -> None:
    with Simulator(rate_limit=(3, 1.5), image_scale=SMALL, queue_time=0.0, generation_time=0.0) as sim:
        api = Api(sim)
        task_id = api.new_task()
        codes = [api.credit().json()["code"], api.info(task_id).json()["code"]]
        assert codes == [200, 200]
        r = api.credit()
        assert r.status_code == 200 and r.json() == {"code": 429, "msg": "Rate limit exceeded", "data": None}
        assert int(r.headers["Retry-After"]) >= 1
        url = json.loads(sim.task(task_id).record_data()["resultJson"])["resultUrls"][0]
        assert api.image(url).status_code == 200  # downloads are not limited
        time.sleep(0.55)  # refill rate: 2 per second
        assert api.credit().json()["code"] == 200


def test_rate_limit_is_per_key() -> None:
    with Simulator(api_keys=("k1", "k2"), rate_limit=(1, 10)) as sim:
        a, b = Api(sim, "k1"), Api(sim, "k2")
        assert a.credit().json()["code"] == 200
        assert a.credit().json()["code"] == 429
        assert b.credit().json()["code"] == 200


def test_credits_and_402() -> None:
    with Simulator(credits=10, image_scale=SMALL) as sim:
        api = Api(sim)
        assert api.credit().json() == {"code": 200, "msg": "success", "data": 10}
        api.new_task(num_images="2")  # per task, whatever num_images says
        assert api.credit().json()["data"] == 4
        r = api.create(body())
        assert r.json()["code"] == 402 and "credit" in r.json()["msg"].lower()
        assert len(sim.tasks) == 1 and len(sim.charges) == 1
        sim.credits = 100.5
        assert api.credit().json()["data"] == 100.5
        api.new_task()
        assert sim.credits == 94.5


def test_cost_per_image_option_bills_per_image() -> None:
    with Simulator(credits=100, cost_per_image=4.0) as sim:
        api = Api(sim)
        api.new_task(num_images="3")
        assert api.credit().json()["data"] == 88 and sim.charges[0].credits == 12


# -- callbacks ------------------------------------------------------------------------------
@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cb", got
    server.shutdown()
    server.server_close()


def test_callback_delivery(api: Api, receiver: tuple[str, list[dict[str, Any]]]) -> None:
    url, got = receiver
    api.sim.next_outcomes.extend([{}, {"fail": ("501", "Content policy violation")}])
    ok = api.create({**body(), "callBackUrl": url}).json()["data"]["taskId"]
    bad = api.create({**body(), "callBackUrl": url}).json()["data"]["taskId"]
    calls = api.sim.wait_for_callbacks(2, timeout=5)
    assert len(calls) == 2 and all(status == 200 for _, _, status in calls)
    assert len(got) == 2
    by_id = {p["data"]["taskId"]: p for p in got}
    assert by_id[ok]["code"] == 200 and by_id[ok]["data"]["state"] == "success"
    extra = {"consumeCredits", "remainedCredits"}
    assert {k: v for k, v in by_id[ok]["data"].items() if k not in extra} == api.data(ok)
    assert by_id[bad]["data"]["state"] == "fail" and by_id[bad]["data"]["failMsg"] == "Content policy violation"


def test_callback_errors_are_swallowed(api: Api) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/cb"
    task_id = api.create({**body(), "callBackUrl": dead}).json()["data"]["taskId"]
    calls = api.sim.wait_for_callbacks(1, timeout=5)
    assert calls[0][0] == dead and isinstance(calls[0][2], str)
    assert api.wait_done(task_id)["state"] == "success"


# -- recording, lifecycle, load ------------------------------------------------------------------
def test_recording(api: Api) -> None:
    task_id = api.new_task()
    api.info(task_id)
    api.credit()
    assert [api.sim.count(e) for e in ("createTask", "recordInfo", "credit", "image")] == [1, 1, 1, 0]
    rec = api.sim.requests[1]
    assert rec.method == "GET" and rec.path == "/api/v1/jobs/recordInfo" and rec.query == {"taskId": task_id}
    assert rec.headers["Authorization"] == "Bearer test-key" and rec.endpoint == "recordInfo"
    assert json.loads(api.sim.requests[0].body or b"") == body()
    assert api.sim.requests[0].time <= rec.time <= time.monotonic()
    api.sim.reset_counts()
    assert api.sim.count("createTask") == 0 and api.sim.requests == []


def test_stop_is_prompt_and_idempotent() -> None:
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    sim.start()
    sim.start()
    api = Api(sim)
    assert api.credit().json()["code"] == 200  # leaves a keep-alive connection open
    start = time.monotonic()
    sim.stop()
    assert time.monotonic() - start < 1.0
    sim.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(sim.url + "/api/v1/chat/credit", timeout=1)


def test_two_hundred_tasks_quickly() -> None:
    with Simulator(generation_time=(0.03, 0.07), queue_time=(0.0, 0.02), image_scale=SMALL,
                   enforce_limits=False) as sim:
        local = threading.local()

        def run(i: int) -> tuple[str, str]:
            if not hasattr(local, "api"):
                local.api = Api(sim)
            task_id = local.api.new_task(seed=str(i % 10))
            data = local.api.wait_done(task_id, interval=0.02)
            return task_id, data["state"]

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(run, range(200)))
        assert time.monotonic() - start < 8
        assert len({t for t, _ in results}) == 200 and {s for _, s in results} == {"success"}
        assert sim.credits == 1_000_000 - 200 * 6


def test_cli_starts_and_answers() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imagen4_jupyter.simulator",
            "--port",
            "0",
            "--key",
            "cli-key",
            "--queue-time",
            "0",
            "0",
            "--generation-time",
            "0.01",
            "0.01",
            "--image-scale",
            "0.0625",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"Apikley simulator listening on (http://127\.0\.0\.1:\d+) \(key: cli-key\)", line)
        assert match, line
        r = requests.get(match.group(1) + "/api/v1/chat/credit", headers={"Authorization": "Bearer cli-key"})
        assert r.json()["code"] == 200
        assert requests.get(match.group(1) + "/nope").status_code == 404
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and err == ""  # quiet: no per-request logging


def test_cli_options_all_have_help() -> None:
    """`--help` explains every option (docs/simulator.md's table is made from it), and `--key` its default."""
    from imagen4_jupyter.simulator.__main__ import build_parser

    actions = {a.option_strings[-1]: a for a in build_parser()._actions if a.option_strings}
    missing = [name for name, a in actions.items() if not a.help]
    assert not missing, f"simulator options without help: {missing}"
    assert "test-key" in actions["--key"].help
