"""Signed callbacks (apikley.md section 9), credits in callback bodies, forged and replayed callbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from test_simulator import SMALL, Api, body

from imagen4_jupyter.simulator import Simulator

KEY = "whsec-test-0123"


class Receiver:
    """A callback endpoint that keeps every POST's headers and JSON body."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []
        got = self.got

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers["Content-Length"])
                got.append((dict(self.headers.items()), json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.got) >= count


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def expected_signature(key: str, task_id: str, stamp: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), f"{task_id}.{stamp}".encode(), hashlib.sha256).digest()).decode()


def verifies(headers: dict[str, str], task_id: str, key: str = KEY) -> bool:
    stamp, sig = headers.get("X-Webhook-Timestamp"), headers.get("X-Webhook-Signature")
    return bool(stamp and sig) and hmac.compare_digest(sig, expected_signature(key, task_id, stamp))


def test_signed_callbacks_and_credits_in_the_body(receiver: Receiver) -> None:
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.05, webhook_key=KEY, credits=100) as sim:
        api = Api(sim)
        sim.next_outcomes.extend([{}, {"fail": ("501", "Content policy violation")}])
        ok = api.create({**body(), "callBackUrl": receiver.url}).json()["data"]["taskId"]
        bad = api.create({**body(), "callBackUrl": receiver.url}).json()["data"]["taskId"]
        receiver.wait(2)
        by_id = {payload["data"]["taskId"]: (headers, payload) for headers, payload in receiver.got}
        now = time.time()
        for task_id in (ok, bad):
            headers, payload = by_id[task_id]
            assert verifies(headers, task_id) and not verifies(headers, task_id, key="other")
            assert abs(int(headers["X-Webhook-Timestamp"]) - now) < 10  # Unix seconds
            assert payload["data"]["consumeCredits"] == 6 and payload["data"]["remainedCredits"] == 88
        assert by_id[ok][1]["code"] == 200 and by_id[ok][1]["data"]["state"] == "success"
        assert by_id[bad][1]["code"] == 501 and by_id[bad][1]["data"]["failMsg"] == "Content policy violation"
        deadline = time.monotonic() + 5  # the simulator records a delivery once the receiver's answer is back
        while len(sim.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {d.payload["data"]["taskId"] for d in sim.deliveries} == {ok, bad}
        assert all(d.status == 200 and verifies(d.headers, d.payload["data"]["taskId"]) for d in sim.deliveries)


def test_unsigned_without_a_webhook_key(receiver: Receiver) -> None:
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.01) as sim:
        Api(sim).create({**body(), "callBackUrl": receiver.url})
        receiver.wait(1)
        headers = receiver.got[0][0]
        assert "X-Webhook-Signature" not in headers and "X-Webhook-Timestamp" not in headers


def test_forged_and_replayed_callbacks(receiver: Receiver) -> None:
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.01, webhook_key=KEY) as sim:
        api = Api(sim)
        task_id = api.create({**body(), "callBackUrl": receiver.url}).json()["data"]["taskId"]
        receiver.wait(1)
        genuine = receiver.got[0][0]
        for forge in ("unsigned", "bad_signature", "stale", "wrong_task", "replay"):
            delivery = sim.send_callback(task_id, forge=forge)
            assert delivery.status == 200
        receiver.wait(6)
        headers = {forge: receiver.got[i + 1][0] for i, forge in
                   enumerate(("unsigned", "bad_signature", "stale", "wrong_task", "replay"))}
        assert "X-Webhook-Signature" not in headers["unsigned"]
        assert not verifies(headers["bad_signature"], task_id)
        assert verifies(headers["stale"], task_id) and time.time() - int(headers["stale"]["X-Webhook-Timestamp"]) > 3000
        assert not verifies(headers["wrong_task"], task_id)
        replay = headers["replay"]
        assert replay["X-Webhook-Signature"] == genuine["X-Webhook-Signature"]
        assert replay["X-Webhook-Timestamp"] == genuine["X-Webhook-Timestamp"]
        assert receiver.got[-1][1] == receiver.got[0][1]  # same body
        assert [d.forge for d in sim.deliveries] == [None, "unsigned", "bad_signature", "stale", "wrong_task", "replay"]
        assert verifies(sim.send_callback(task_id).headers, task_id)  # a genuine one on demand


def test_send_callback_needs_a_url_and_a_known_forgery() -> None:
    with Simulator(queue_time=0.0, generation_time=0.01) as sim:
        task_id = Api(sim).new_task()
        with pytest.raises(ValueError):
            sim.send_callback(task_id)
        with pytest.raises(ValueError):
            sim.send_callback(task_id, url="http://127.0.0.1:9/cb", forge="nonsense")
        with pytest.raises(ValueError):
            sim.send_callback(task_id, url="http://127.0.0.1:9/cb", forge="replay")  # nothing to replay
        with pytest.raises(KeyError):
            sim.send_callback("task_google_0", url="http://127.0.0.1:9/cb")
