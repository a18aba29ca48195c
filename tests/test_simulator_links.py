"""Result-URL expiry, media retention and fresh links (POST /api/v1/common/download-url), over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from test_simulator import SMALL, Api

from imagen4_jupyter.simulator import Simulator

PATH = "/api/v1/common/download-url"


def fresh(api: Api, url: Any = None, raw: bytes | None = None) -> requests.Response:
    if raw is not None:
        return api.s.post(api.sim.url + PATH, data=raw, headers={**api.headers(), "Content-Type": "application/json"})
    return api.s.post(api.sim.url + PATH, json={"url": url}, headers=api.headers())


def make(**kw: Any) -> Simulator:
    return Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.01, enforce_limits=False, **kw)


def test_fresh_link_serves_the_same_image() -> None:
    with make() as sim:
        api = Api(sim)
        url = api.urls(api.new_task(num_images="2"))[1]
        r = fresh(api, url)
        assert r.status_code == 200
        answer = r.json()
        assert answer["code"] == 200 and answer["msg"] == "success" and isinstance(answer["data"], str)
        link = answer["data"]
        assert link.startswith(sim.url + "/dl/") and link != url
        got = api.image(link)
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/png"
        assert got.content == api.image(url).content
        assert fresh(api, link).json()["code"] == 200  # a link the service made may be refreshed too
        assert sim.count("downloadUrl") == 2


@pytest.mark.parametrize(
    "bad",
    ["https://tempfile.example/x.png", "/files/abc/1.png", "", None, 5, "{base}/files/notatoken/1.png",
     "{base}/files/{token}/3.png", "{base}/dl/nolink.png", "{base}/api/v1/chat/credit"],
)
def test_urls_the_simulator_did_not_generate_answer_422(bad: Any) -> None:
    with make() as sim:
        api = Api(sim)
        task = sim.task(api.new_task(num_images="2"))
        api.wait_done(task.task_id)
        if isinstance(bad, str):
            bad = bad.format(base=sim.url, token=task.token)
        answer = fresh(api, bad).json()
        assert answer["code"] == 422 and answer["data"] is None and answer["msg"]


def test_fresh_link_needs_auth_and_a_json_body() -> None:
    with make() as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        assert fresh(Api(sim, key="wrong"), url).json()["code"] == 401
        assert fresh(api, raw=b"{not json").json()["code"] == 422
        assert fresh(api, raw=b'["a"]').json()["code"] == 422


def test_not_finished_task_has_nothing_to_refresh() -> None:
    with Simulator(queue_time=0.0, generation_time=5.0) as sim:
        api = Api(sim)
        task = sim.task(api.new_task())
        assert fresh(api, task.image_urls[0]).json()["code"] == 422


@pytest.mark.parametrize("status", [404, 403, 410])
def test_expired_result_url_then_a_fresh_link_still_works(status: int) -> None:
    with make(url_ttl=0.2, expired_status=status) as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        original = api.image(url).content
        time.sleep(0.25)
        assert api.image(url).status_code == status  # the result URL expired...
        link = fresh(api, url).json()["data"]  # ...the media is retained
        got = api.image(link)
        assert got.status_code == 200 and got.content == original


def test_fresh_link_expires_after_link_ttl() -> None:
    with make(link_ttl=0.2, expired_status=410) as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        link = fresh(api, url).json()["data"]
        assert api.image(link).status_code == 200
        time.sleep(0.25)
        assert api.image(link).status_code == 410
        assert api.image(url).status_code == 200  # the result URL has its own (longer) clock
        assert api.image(fresh(api, url).json()["data"]).status_code == 200


def test_after_retention_nothing_serves_the_media() -> None:
    with make(retention=0.3) as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        link = fresh(api, url).json()["data"]
        time.sleep(0.35)
        answer = fresh(api, url).json()
        assert answer["code"] == 404 and "retained" in answer["msg"] and answer["data"] is None
        assert api.image(url).status_code == 404 and api.image(link).status_code == 404


def test_endpoint_can_be_absent() -> None:
    with make(download_url_enabled=False) as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        r = fresh(api, url)
        assert r.status_code == 404 and r.json() == {"code": 404, "msg": "endpoint not found", "data": None}
        assert sim.count("downloadUrl") == 1


def test_expired_status_is_validated() -> None:
    with pytest.raises(ValueError):
        Simulator(expired_status=500)


def test_fault_injection_reaches_the_endpoint() -> None:
    with make() as sim:
        api = Api(sim)
        url = api.urls(api.new_task())[0]
        sim.inject("downloadUrl", code=455)
        assert fresh(api, url).json()["code"] == 455
        assert fresh(api, url).json()["code"] == 200
