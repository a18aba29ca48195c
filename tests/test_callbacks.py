"""The callback receiver over real HTTP: hints only, size cap, unknown tokens, signatures, replays."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from imagen4_jupyter.api.callbacks import CallbackReceiver, signature, unreachable_reason

KEY = "whk-test-key"


@pytest.fixture
def hints():
    return []


@pytest.fixture
def receiver(hints):
    r = CallbackReceiver("https://example.org/cb", hints.append, webhook_key=KEY).start()
    yield r
    r.stop()


def post(receiver, token, body, headers=None) -> int:
    host, port = receiver.address
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{host}:{port}/cb/{token}", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def signed(task_id, stamp=None):
    stamp = str(int(time.time() if stamp is None else stamp))
    return {"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": signature(KEY, task_id, stamp)}


BODY = {"code": 200, "msg": "success", "data": {"taskId": "task_1", "state": "success",
                                                "resultJson": "{\"resultUrls\": [\"http://evil/x.png\"]}"}}


def test_a_signed_callback_is_a_hint_never_a_result(receiver, hints):
    url, token = receiver.new_url("req-key-1")
    assert url == f"https://example.org/cb/{token}"
    assert post(receiver, token, BODY, signed("task_1")) == 200
    assert [(h.task_id, h.token, h.signed) for h in hints] == [("task_1", token, True)]
    assert not hasattr(hints[0], "result_urls")  # only the id travels on


def test_forged_unsigned_replayed_stale_and_oversized_posts_are_refused(receiver, hints):
    _, token = receiver.new_url("k")
    headers = signed("task_1")
    assert post(receiver, token, BODY) == 403  # unsigned
    assert post(receiver, token, BODY, {**headers, "X-Webhook-Signature": signature("wrong", "task_1", "1")}) == 403
    assert post(receiver, token, BODY, signed("task_other")) == 403  # signed for another task
    assert post(receiver, token, BODY, headers) == 200
    assert post(receiver, token, BODY, headers) == 403  # replayed
    assert post(receiver, token, BODY, signed("task_1", time.time() - 3600)) == 403  # stale
    assert post(receiver, "not-a-token", BODY, signed("task_1")) == 404
    assert post(receiver, token, b"x" * (receiver.max_body + 1)) == 413
    assert post(receiver, token, b"{not json", signed("task_1")) == 403
    assert len(hints) == 1
    assert receiver.refused == {"unsigned": 1, "bad signature": 2, "replayed": 1, "stale timestamp": 1,
                                "unknown token": 1, "too large": 1, "not JSON": 1}


def test_without_a_key_task_id_and_task_id_spellings_both_work(hints):
    r = CallbackReceiver("https://example.org/cb", hints.append).start()
    try:
        _, token = r.new_url("k")
        assert post(r, token, {"data": {"task_id": "task_9"}}) == 200
        assert post(r, token, {"data": {"taskId": "task_8"}}) == 200
        assert [(h.task_id, h.signed) for h in hints] == [("task_9", False), ("task_8", False)]
    finally:
        r.stop()


def test_a_laptop_address_gets_a_clear_word():
    assert "cannot reach 127.0.0.1" in unreachable_reason("http://127.0.0.1:8000/cb")
    assert "cannot reach 192.168.1.5" in unreachable_reason("http://192.168.1.5/cb")
    assert unreachable_reason("http://localhost/cb")
    assert unreachable_reason("https://hooks.example.org/cb") is None
    assert unreachable_reason("https://8.8.8.8/cb") is None


def test_a_thousand_idle_connections_add_no_more_threads_than_the_pool(hints):
    """Each connection used to get its own thread before its token was checked (1,200 idle ones made 1,216 kernel
    threads). Now a fixed pool handles them, and the watchdog closes a connection after its deadline."""
    import resource
    import socket
    import threading

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    r = CallbackReceiver("https://example.org/cb", hints.append, workers=4, deadline=1.0).start()
    idle: list[socket.socket] = []
    try:
        before = threading.active_count()
        for _ in range(1000):
            idle.append(socket.create_connection(r.address, timeout=5))
        time.sleep(0.5)
        during = threading.active_count()
        assert during - before <= r.workers, (before, during)
        time.sleep(1.5)  # past the deadline: the idle connections let their workers go
        _, token = r.new_url("k")
        assert post(r, token, {"data": {"taskId": "task_after_flood"}}) == 200  # while the idle ones stay open
        assert [h.task_id for h in hints] == ["task_after_flood"]
        assert threading.active_count() - before <= r.workers
    finally:
        for s in idle:
            s.close()
        r.stop()


def test_deeply_nested_json_is_refused_in_one_line_and_never_raised(receiver, hints, capsys, caplog):
    _, token = receiver.new_url("k")
    assert post(receiver, token, b"[" * 60000, signed("task_1")) == 403
    assert post(receiver, token, b'{"data": {"taskId": "task_1", "x": ' + b"[" * 40 + b"]" * 40 + b"}}",
                signed("task_1")) == 403
    assert receiver.refused == {"nested too deep": 2}
    assert hints == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # nothing printed (a kernel's stderr is the user's notebook)
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert post(receiver, token, BODY, signed("task_1")) == 200  # the receiver still works


def test_the_listen_address_defaults_to_loopback_and_an_open_one_says_what_it_exposes():
    from imagen4_jupyter.records.callback_hub import exposure, parse_listen

    assert parse_listen(":8765") == ("127.0.0.1", 8765) and parse_listen("8765") == ("127.0.0.1", 8765)
    assert parse_listen("0.0.0.0:8765") == ("0.0.0.0", 8765)
    assert exposure("127.0.0.1") is None and exposure("localhost") is None
    said = exposure("0.0.0.0")
    assert said and "every network" in said and "tunnel or reverse proxy" in said and "\n" not in said


def test_the_webhook_key_is_never_sent_in_a_request(hints):
    from imagen4_jupyter import GenerationRequest, InvalidRequestError

    key = "whk-" + "7f3e9a1c5b2d4e60"
    CallbackReceiver("https://example.org/cb", hints.append, webhook_key=key).stop()
    with pytest.raises(InvalidRequestError, match="prompt contains your API or webhook key"):
        GenerationRequest.create(f"a sign that reads {key}")
