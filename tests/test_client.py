"""The HTTP client against the simulator over real sockets: envelopes, retries, never billing twice."""
from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import FAST_RETRY, KEY
from PIL import Image

from imagen4_jupyter import GenerationRequest, Imagen4Client, PollSchedule, Result, RetryPolicy, TaskRecord
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.schedules import parse_retry_after

# Image sizes the service produces per aspect ratio, times the fixture's image_scale (1/16).
SIZES = {"1:1": (64, 64), "16:9": (88, 48), "9:16": (48, 88), "4:3": (80, 56), "3:4": (56, 80)}


def raw(sim, path: str, **params) -> dict:
    """What the simulator really answers, read with plain requests (to show what the client copes with)."""
    return requests.get(sim.url + path, params=params, headers={"Authorization": f"Bearer {KEY}"},
                        timeout=5).json()


def gaps(sim, endpoint: str) -> list[float]:
    times = [r.time for r in sim.requests if r.endpoint == endpoint]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


# -- the happy path ---------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", SIZES)
def test_generate_returns_result_with_png_images_of_the_right_size(sim, client, ratio):
    res = client.generate("a lighthouse at dusk", aspect_ratio=ratio, num_images=2, seed="7", timeout=10)
    assert isinstance(res, Result) and res.state == "success"
    assert res.task_id in sim.tasks and res.request.aspect_ratio == ratio
    assert res.result_urls == sim.task(res.task_id).result_urls and len(res.images) == 2
    assert len({im.sha256 for im in res.images}) == 2  # two different pictures
    for im in res.images:
        data = im.data
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as pic:
            pic.load()
            assert pic.format == "PNG" and pic.size == SIZES[ratio]
        assert (im.width, im.height) == SIZES[ratio]
        assert Path(im.path).name == f"{im.sha256}.png" and Path(im.path).parent == client.store.root
    assert res.record.cost_time_ms is not None and res.paths == [str(im.path) for im in res.images]


def test_generate_takes_the_keywords_of_submit_and_no_others(sim, client):
    res = client.generate("a quiet harbour", negative_prompt="people", aspect_ratio="16:9", num_images=1, seed=9,
                          timeout=10)
    sent = json.loads(next(r.body for r in sim.requests if r.endpoint == "createTask"))["input"]
    assert (sent["negative_prompt"], sent["aspect_ratio"], str(sent["seed"])) == ("people", "16:9", "9")
    assert res.request.negative_prompt == "people"
    with pytest.raises(TypeError, match="ratio"):
        client.generate("x", ratio="16:9")  # a misspelt keyword is an error at once, before anything is sent
    assert sim.count("createTask") == 1


def test_get_task_decodes_param_and_result_json_a_second_time(sim, client):
    res = client.generate("a cat", seed=3, timeout=10)
    data = raw(sim, "/api/v1/jobs/recordInfo", taskId=res.task_id)["data"]
    assert isinstance(data["param"], str) and isinstance(data["resultJson"], str)  # JSON inside JSON
    rec = client.get_task(res.task_id)
    assert rec.state == "success" and rec.finished
    assert rec.param == json.loads(sim.requests[0].body)
    assert rec.result_urls == json.loads(data["resultJson"])["resultUrls"]
    assert rec.create_time_ms == data["createTime"] and rec.complete_time_ms == data["completeTime"]


def test_msg_and_message_are_both_accepted(sim, client):
    """createTask answers with `msg`, recordInfo with `message`: the client reads both."""
    created = requests.post(sim.url + "/api/v1/jobs/createTask", headers={"Authorization": f"Bearer {KEY}"},
                            json=GenerationRequest.create("x").to_payload(), timeout=5).json()
    assert "msg" in created and "message" not in created
    answer = raw(sim, "/api/v1/jobs/recordInfo", taskId=created["data"]["taskId"])
    assert "message" in answer and "msg" not in answer
    assert client.get_task(created["data"]["taskId"]).task_id == created["data"]["taskId"]
    sim.inject("createTask", code=422, msg="prompt: too spicy")
    with pytest.raises(E.ServiceValidationError, match="too spicy"):
        client.submit("x")
    sim.inject("recordInfo", code=422, msg="taskId: looks odd")
    with pytest.raises(E.ServiceValidationError, match="looks odd"):
        client.get_task(created["data"]["taskId"])


def test_unknown_extra_fields_are_tolerated(sim, client):
    job = client.submit("x")
    data = raw(sim, "/api/v1/jobs/recordInfo", taskId=job.task_id)["data"]
    assert "progress" in data  # a field the documentation does not mention
    assert client.get_task(job.task_id).task_id == job.task_id
    job.wait(10)


def test_queuing_state_is_observed(sim, client):
    sim.next_outcomes.append({"queue_time": 0.5, "generation_time": 0.3})
    seen: list[str] = []
    job = client.submit("x")
    job.on_change(lambda j: seen.append(j.status))
    job.wait(10)
    order = ["submitted", "waiting", "queuing", "generating", "success"]
    assert "queuing" in seen and seen[-1] == "success"
    assert seen == sorted(seen, key=order.index)  # never goes backwards
    assert seen.index("queuing") < seen.index("generating") < seen.index("success")


def test_credits_endpoint_and_billing(sim, client):
    before = client.credits()
    assert before == sim.credits == 1_000_000
    client.generate("x", num_images=3, timeout=10)
    assert client.credits() == before - 3 * sim.cost_per_image
    sim.inject("credit", code=500)
    assert client.credits() == sim.credits  # retried
    assert sim.count("credit") == 4


def test_generation_failure_raises_generation_failed_with_fail_msg(sim, client):
    sim.next_outcomes.append({"fail": ("400", "Your prompt was flagged by the safety filter")})
    job = client.submit("x")
    with pytest.raises(E.GenerationFailedError) as info:
        job.wait(10)
    err = info.value
    assert "flagged by the safety filter" in str(err) and "failCode 400" in str(err)
    assert err.task_id == job.task_id and job.task_id in str(err) and "Change the prompt" in str(err)
    assert job.status == "fail" and job.record.state == "fail"
    assert sim.count("image") == 0


def test_track_follows_an_existing_task_without_creating_one(sim, client, make_client):
    task_id = client.create_task(GenerationRequest.create("x"))
    other = make_client()
    res = other.track(task_id).wait(10)
    assert res.task_id == task_id and len(res.images) == 1
    assert sim.count("createTask") == 1


# -- retries ----------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [429, 455])
def test_http_200_carrying_retryable_code_on_create_task_is_retried_once_and_bills_once(sim, client, code):
    sim.inject("createTask", code=code, http_status=200)
    res = client.generate("x", timeout=10)
    assert sim.count("createTask") == 2 and list(sim.tasks) == [res.task_id]


@pytest.mark.parametrize("fault", [dict(code=429), dict(code=455), dict(code=500), dict(http_status=502),
                                   dict(http_status=503), dict(drop=True), dict(malformed=True)],
                         ids=["429", "455", "500", "html502", "html503", "drop", "malformed"])
def test_status_check_is_retried_then_succeeds(sim, client, fault):
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.inject("recordInfo", times=2, **fault)
    if "malformed" in fault:  # a garbled answer is a protocol error, not retried blindly
        with pytest.raises(E.ProtocolError) as info:
            client.get_task(task_id)
        assert info.value.task_id == task_id and task_id in str(info.value)
        assert "invalid JSON" in str(info.value)
        return
    assert client.get_task(task_id).task_id == task_id
    assert sim.count("recordInfo") == 3


def test_retry_after_is_honoured(sim, make_client):
    client = make_client(retry=RetryPolicy(attempts=3, base=0.001, cap=0.002, max_retry_after=5))
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.inject("recordInfo", code=429, retry_after=0.6)
    sim.inject("recordInfo", code=429)
    client.get_task(task_id)
    first, second = gaps(sim, "recordInfo")
    assert first >= 0.55  # waited as told
    assert second < 0.3  # without Retry-After, the (tiny) backoff
    sim.inject("createTask", code=429, retry_after=0.4)
    t0 = time.monotonic()
    client.create_task(GenerationRequest.create("x"))
    assert time.monotonic() - t0 >= 0.35 and sim.count("createTask") == 3


def test_retry_after_is_capped_by_policy(sim, client):
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.inject("recordInfo", code=429, retry_after=3600)
    t0 = time.monotonic()
    client.get_task(task_id)
    assert time.monotonic() - t0 < 1.0  # FAST_RETRY.max_retry_after is 0.2 s


def test_retry_after_header_forms():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5 and parse_retry_after("-2") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after(" 7 ") == 7.0 and parse_retry_after("nan") is None and parse_retry_after("inf") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(future) <= 31  # HTTP-date form
    past = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 30))
    assert parse_retry_after(past) == 0.0


def test_backoff_grows_and_has_jitter():
    pol = RetryPolicy(attempts=6, base=0.5, cap=20.0)
    draws = [pol.delay(3) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in draws) and len(set(draws)) > 150
    assert max(pol.delay(10) for _ in range(200)) <= 20.0


def test_connection_refused_status_check_is_retried_until_the_service_is_back(sim, make_client):
    client = make_client(retry=RetryPolicy(attempts=30, base=0.02, cap=0.05))
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.stop()  # the port is closed: connections are refused
    restart = threading.Timer(0.4, sim.start)
    restart.start()
    try:
        rec = client.get_task(task_id)
    finally:
        restart.join()
    assert rec.task_id == task_id
    assert sim.count("recordInfo") == 1  # the refused attempts never reached it


def test_connection_refused_gives_up_with_a_transport_error(sim, client):
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.stop()
    with pytest.raises(E.TransportError, match="Could not connect.*APIKLEY_BASE_URL") as info:
        client.get_task(task_id)
    assert info.value.task_id == task_id and info.value.not_sent and info.value.retryable


def test_create_task_to_a_closed_port_was_never_sent_so_it_is_retried(sim, make_client):
    client = make_client(retry=RetryPolicy(attempts=30, base=0.02, cap=0.05))
    sim.stop()
    restart = threading.Timer(0.3, sim.start)
    restart.start()
    try:
        task_id = client.create_task(GenerationRequest.create("x"))
    finally:
        restart.join()
    assert list(sim.tasks) == [task_id] and sim.count("createTask") == 1


# -- never bill twice ---------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [dict(drop_after=True), dict(drop=True), dict(http_status=502),
                                   dict(http_status=504), dict(malformed=True)],
                         ids=["drop-after-processing", "drop", "html502", "html504", "malformed"])
def test_create_task_without_a_usable_answer_is_outcome_unknown_and_not_resent(sim, client, fault):
    sim.inject("createTask", times=None, **fault)
    with pytest.raises(E.OutcomeUnknownError) as info:
        client.submit("x")
    text = str(info.value)
    assert "NOT resent" in text and "unknown whether a task was created" in text
    time.sleep(0.1)
    assert sim.count("createTask") == 1
    if "drop_after" in fault:
        assert len(sim.tasks) == 1  # it really was created (and billed): a resend would bill twice


def test_create_task_read_timeout_is_outcome_unknown_and_not_resent(sim, make_client):
    client = make_client(timeout=(2.0, 0.3))
    sim.inject("createTask", delay=0.8)  # answers (and creates the task) after the client gave up
    t0 = time.monotonic()
    with pytest.raises(E.OutcomeUnknownError, match="timed out"):
        client.submit("x")
    assert time.monotonic() - t0 < 0.8
    time.sleep(0.9)
    assert sim.count("createTask") == 1 and len(sim.tasks) == 1


def test_status_check_read_timeout_is_retried(sim, make_client):
    client = make_client(timeout=(2.0, 0.3))
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.inject("recordInfo", delay=0.6)
    assert client.get_task(task_id).task_id == task_id
    assert sim.count("recordInfo") == 2


def test_create_task_redirect_is_a_protocol_error_and_not_followed(sim, client):
    sim.inject("createTask", redirect="http://127.0.0.1:9/elsewhere")
    with pytest.raises(E.ProtocolError, match="redirected createTask.*APIKLEY_BASE_URL"):
        client.submit("x")
    assert sim.count("createTask") == 1 and sim.tasks == {}


def test_redirect_on_status_check_is_a_protocol_error_naming_the_base_url(sim, client):
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.inject("recordInfo", redirect="https://elsewhere.example/login")
    with pytest.raises(E.ProtocolError, match="redirected.*elsewhere.example.*APIKLEY_BASE_URL") as info:
        client.get_task(task_id)
    assert info.value.task_id == task_id and sim.count("recordInfo") == 1


# -- malformed answers ------------------------------------------------------------------------

@pytest.mark.parametrize("outcome, says", [
    ({"result_json": "{not json"}, "`resultJson` is not valid JSON"),
    ({"result_json": '{"images": []}'}, "no `resultUrls`"),
    ({"result_json": '["a"]'}, "no `resultUrls`"),
    ({"result_json": '{"resultUrls": "http://x/1.png"}'}, "not a list of URLs"),
    ({"result_urls": []}, "no image URLs"),
])
def test_malformed_task_record_is_a_protocol_error_with_task_id(sim, client, outcome, says):
    sim.next_outcomes.append(outcome)
    job = client.submit("x")
    err = job.exception(timeout=10)
    assert isinstance(err, E.ProtocolError) and says in str(err)
    assert err.task_id == job.task_id and job.task_id in str(err)
    assert err.final  # a success without readable URLs is the service's last word: not asked again
    with pytest.raises(E.ProtocolError, match=says):
        client.get_task(job.task_id)


def test_html_404_points_at_the_base_url(sim, client):
    task_id = client.create_task(GenerationRequest.create("x"))
    sim.inject("recordInfo", http_status=404)  # an HTML 404 page: probably a wrong base URL
    with pytest.raises(E.NotFoundError, match="not the Apikley API. Check APIKLEY_BASE_URL") as info:
        client.get_task(task_id)
    assert info.value.task_id == task_id


def test_overall_timeout(sim, make_client):
    client = make_client(schedule=PollSchedule.fixed(0.05, max_wait=0.3))
    sim.next_outcomes.append({"generation_time": 5.0})
    job = client.submit("x")
    t0 = time.monotonic()
    with pytest.raises(E.TimeoutError) as info:
        job.wait(5)
    assert time.monotonic() - t0 < 1.5
    err = info.value
    assert err.task_id == job.task_id and "generating after 0.3 s" in str(err)
    assert "client.get_task" in str(err)  # says how to pick it up later


def test_overall_timeout_is_kept_even_with_a_long_poll_interval(sim, make_client):
    client = make_client(schedule=PollSchedule.fixed(30.0, max_wait=0.3))
    sim.next_outcomes.append({"generation_time": 60.0})
    job = client.submit("x")
    with pytest.raises(E.TimeoutError, match="stopped waiting"):
        job.wait(3)


def test_wait_timeout_is_distinct_and_the_job_keeps_going(sim, client):
    sim.next_outcomes.append({"generation_time": 0.5})
    job = client.submit("x")
    with pytest.raises(E.TimeoutError, match="call wait\\(\\) again"):
        job.wait(0.05)
    assert job.wait(10).task_id == job.task_id


# -- configuration and the API key --------------------------------------------------------------

def test_key_and_base_url_from_environment(sim, monkeypatch, tmp_path):
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url + "/")
    with Imagen4Client(cache_dir=tmp_path, retry=FAST_RETRY) as c:
        assert c.base_url == sim.url and c.credits() == sim.credits


def test_default_base_url(monkeypatch, tmp_path):
    monkeypatch.delenv("APIKLEY_BASE_URL", raising=False)
    with Imagen4Client(api_key="k", cache_dir=tmp_path) as c:
        assert c.base_url == "https://api.apikley.ru"


@pytest.mark.parametrize("key", ["", "   ", None])
def test_missing_key_sends_nothing(sim, make_client, monkeypatch, key):
    monkeypatch.delenv("APIKLEY_API_KEY", raising=False)
    client = make_client(api_key=key)
    with pytest.raises(E.ConfigurationError, match="APIKLEY_API_KEY"):
        client.submit("x")
    assert sim.count() == 0


@pytest.mark.parametrize("key", ["abc\ndef", "abc def", "ключ-123", "abc\x7f"])
def test_key_with_control_characters_sends_nothing(sim, make_client, key):
    with pytest.raises(E.ConfigurationError, match="control characters or non-ASCII"):
        make_client(api_key=key).submit("x")
    assert sim.count() == 0


@pytest.mark.parametrize("url, says", [("http://api.example.com", "plain http"), ("ftp://x", "base URL"),
                                       ("https://user:pw@api.example.com", "user name or password")])
def test_unsafe_base_urls_refused(url, says, tmp_path):
    with pytest.raises(E.ConfigurationError, match=says):
        Imagen4Client(api_key="k", base_url=url, cache_dir=tmp_path)


def test_invalid_task_id_sends_nothing(sim, client):
    for bad in ("../etc", "a b", "", "x/y", None):
        with pytest.raises(E.InvalidRequestError):
            client.get_task(bad)
    assert sim.count() == 0


def test_api_key_never_leaks(sim, make_client, tmp_path):
    client = make_client()
    assert KEY not in repr(client) and KEY not in str(client)
    errors: list[BaseException] = []
    client.generate("x", timeout=10)  # files in the cache
    for endpoint, fault in [("createTask", dict(code=401)), ("createTask", dict(drop_after=True)),
                            ("createTask", dict(code=422)), ("createTask", dict(malformed=True))]:
        sim.inject(endpoint, **fault)
        try:
            client.submit("x")
        except E.Imagen4Error as err:
            errors.append(err)
    task_id = client.create_task(GenerationRequest.create("x"))
    for fault in [dict(code=404), dict(malformed=True), dict(redirect="http://127.0.0.1:9/")]:
        sim.inject("recordInfo", **fault)
        try:
            client.get_task(task_id)
        except E.Imagen4Error as err:
            errors.append(err)
    sim.inject("image", times=None, expired=True)  # the fresh link too
    errors.append(client.submit("y").exception(10))
    sim.stop()
    try:
        client.get_task(task_id)
    except E.Imagen4Error as err:
        errors.append(err)
    assert len(errors) == 9 and all(isinstance(e, E.Imagen4Error) for e in errors)
    for err in errors:
        assert KEY not in str(err) and KEY not in repr(err) and KEY not in repr(err.__dict__)
        assert err.__cause__ is None or KEY not in repr(err.__cause__)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files)  # the scan below reads the cache, at least
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    # image downloads never carry the key
    assert all("Authorization" not in r.headers for r in sim.requests if r.endpoint == "image")


# -- TaskRecord parsing (pure) --------------------------------------------------------------------

GOOD = {"taskId": "task_1", "model": "google/imagen4", "state": "success",
        "param": '{"model":"google/imagen4","input":{"prompt":"x"}}',
        "resultJson": '{"resultUrls":["https://h/1.png","https://h/2.png"]}', "failCode": "", "failMsg": "",
        "costTime": 15000, "completeTime": 1698765432000, "createTime": 1698765400000,
        "updateTime": 1698765432000, "someNewField": {"x": 1}}


def test_task_record_documented_example():
    rec = TaskRecord.from_data(GOOD, "task_1")
    assert rec.param == {"model": "google/imagen4", "input": {"prompt": "x"}}
    assert rec.result_urls == ["https://h/1.png", "https://h/2.png"] and rec.cost_time_ms == 15000
    assert rec.fail_code is None and rec.fail_msg is None and rec.finished
    no_cost = dict(GOOD, costTime=None)
    del no_cost["costTime"]
    assert TaskRecord.from_data(no_cost, "task_1").cost_time_ms is None  # may be absent
    already = dict(GOOD, param={"model": "google/imagen4"}, resultJson={"resultUrls": ["https://h/1.png"]})
    assert TaskRecord.from_data(already).result_urls == ["https://h/1.png"]


def test_task_record_fail_and_running():
    rec = TaskRecord.from_data(dict(GOOD, state="fail", resultJson="", failCode=500, failMsg="filtered"))
    assert (rec.state, rec.fail_code, rec.fail_msg, rec.result_urls) == ("fail", "500", "filtered", [])
    for state in ("waiting", "queuing", "generating"):
        rec = TaskRecord.from_data(dict(GOOD, state=state, resultJson=""))
        assert rec.state == state and not rec.finished


@pytest.mark.parametrize("data, says", [
    (None, "no task data"), ([], "no task data"), ({"state": "success", "taskId": ""}, "no taskId"),
    (dict(GOOD, state="done"), "unknown state 'done'"), (dict(GOOD, state=None), "unknown state"),
    (dict(GOOD, param="{oops"), "`param` is not valid JSON"), (dict(GOOD, param=5), "`param` should be"),
    (dict(GOOD, resultJson=""), "no `resultUrls`"), (dict(GOOD, resultJson='{"resultUrls":[""]}'), "not a list"),
    (dict(GOOD, taskId="task_2"), "answered about 'task_2'"),
])
def test_task_record_malformed(data, says):
    tid = None if says == "no taskId" else "task_1"
    with pytest.raises(E.ProtocolError, match=says) as info:
        TaskRecord.from_data(data, tid)
    assert info.value.task_id == tid and (tid is None or f"(task {tid})" in str(info.value))
    assert info.value.final == ("resultUrls" in says or "not a list" in says)  # only a success's bad result


def test_netrc_entry_does_not_replace_the_bearer_key(monkeypatch, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.example.com login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with Imagen4Client(api_key="k-123", base_url="https://api.example.com", cache_dir=tmp_path) as c:
        assert c._http.trust_env  # proxies etc. from the environment are honoured for remote hosts
        for url, auth in [("https://api.example.com/api/v1/chat/credit", "Bearer k-123"),
                          ("https://api.example.com/files/1.png", None)]:
            headers = {"Authorization": auth} if auth else {}
            prepared = c._http.prepare_request(requests.Request("GET", url, headers=headers))
            assert prepared.headers.get("Authorization") == auth
