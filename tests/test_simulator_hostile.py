"""Hostile or broken results by fault injection: huge declared PNG size, extra URLs, mislabeled bodies,
oversized images, a status answer that trickles. Over real HTTP."""

from __future__ import annotations

import http.client
import io
import json
import struct
import threading
import time
import warnings

import pytest
from PIL import Image
from test_simulator import SMALL, Api

from imagen4_jupyter.simulator import Simulator


@pytest.fixture
def api():
    with Simulator(image_scale=SMALL, queue_time=0.0, generation_time=0.01, enforce_limits=False) as sim:
        yield Api(sim)


def declared_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_huge_png_header_in_a_small_file(api: Api) -> None:
    url = api.urls(api.new_task())[0]
    api.sim.inject("image", huge_png=True)
    r = api.image(url)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert declared_size(r.content) == (12000, 12000) and len(r.content) < 2000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Image.open(io.BytesIO(r.content)).size == (12000, 12000)  # opening is cheap; decoding is not
    api.sim.inject("image", huge_png=(30000, 20000))
    assert declared_size(api.image(url).content) == (30000, 20000)
    assert declared_size(api.image(url).content) == (64, 64)  # once only


def test_more_result_urls_than_images_asked(api: Api) -> None:
    api.sim.next_outcomes.append({"extra_urls": 3})
    task_id = api.new_task(num_images="1")
    urls = api.urls(task_id)
    assert len(urls) == 4 and len(set(urls)) == 4
    assert all(api.image(u).status_code == 200 for u in urls)  # every one of them serves an image
    assert json.loads(api.data(task_id)["param"])["input"]["num_images"] == "1"  # asked for one


def test_body_is_not_the_type_its_content_type_claims(api: Api) -> None:
    url = api.urls(api.new_task())[0]
    api.sim.inject("image", mislabeled=True)
    r = api.image(url)
    assert r.headers["Content-Type"] == "image/png" and r.content[:3] == b"\xff\xd8\xff"  # JPEG bytes
    assert Image.open(io.BytesIO(r.content)).format == "JPEG"


def test_image_larger_than_a_given_size(api: Api) -> None:
    url = api.urls(api.new_task())[0]
    normal = api.image(url).content
    api.sim.inject("image", oversize=3_000_000)
    r = api.image(url)
    assert len(r.content) >= 3_000_000 > len(normal) and int(r.headers["Content-Length"]) == len(r.content)
    img = Image.open(io.BytesIO(r.content))
    img.load()  # still a valid PNG of the same picture
    assert img.size == (64, 64) and img.tobytes() == Image.open(io.BytesIO(normal)).tobytes()


def test_status_answer_trickles(api: Api) -> None:
    task_id = api.new_task()
    api.sim.inject("recordInfo", trickle=0.2)
    host, port = api.sim.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", f"/api/v1/jobs/recordInfo?taskId={task_id}", headers=api.headers())
    start = time.monotonic()
    response = conn.getresponse()
    length = int(response.headers["Content-Length"])
    assert response.status == 200 and length > 200
    got = b""
    while time.monotonic() - start < 1.0:
        got += response.read(1)
    assert 2 <= len(got) <= 8 < length  # about one byte per 0.2 s: the whole answer would take > 40 s
    assert json.loads(api.info(task_id).content)["code"] == 200  # other requests are not held up
    conn.close()


def test_trickle_stops_with_the_simulator() -> None:
    sim = Simulator(enforce_limits=False).start()
    sim.inject("credit", trickle=True)
    host, port = sim.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/api/v1/chat/credit", headers={"Authorization": f"Bearer {sim.api_key}"})
    response = conn.getresponse()
    assert response.read(1) == b"{"
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (sim.stop(), done.set()))
    start = time.monotonic()
    stopper.start()
    assert done.wait(3) and time.monotonic() - start < 3
    conn.close()


@pytest.mark.parametrize(
    ("endpoint", "fault"),
    [("recordInfo", {"huge_png": True}), ("image", {"huge_png": (0, 5)}), ("image", {"oversize": 0}),
     ("createTask", {"mislabeled": True}), ("image", {"trickle": -1})],
)
def test_hostile_faults_are_validated(endpoint: str, fault: dict) -> None:
    with pytest.raises(ValueError):
        Simulator().inject(endpoint, **fault)
