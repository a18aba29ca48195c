"""The live service's quirks as the client meets them (apikley.md section 7), over real sockets."""
from __future__ import annotations

import pytest
from conftest import FAST_POLL, FAST_RETRY, KEY

from imagen4_jupyter import Imagen4Client, NotFoundError
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.simulator import Simulator


@pytest.fixture
def live_like(tmp_path):
    """The simulator as the live service behaves by default: an unknown task id answers 422 "recordInfo is null"."""
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05), image_scale=0.0625,
                   enforce_limits=False) as sim:
        client = Imagen4Client(KEY, sim.url, schedule=FAST_POLL, retry=FAST_RETRY, cache_dir=tmp_path / "c",
                               limits=Limits.off())
        yield sim, client
        client.close()


def test_an_unknown_task_id_is_reported_as_an_unknown_task(live_like):
    sim, client = live_like
    with pytest.raises(NotFoundError) as info:
        client.get_task("task_google_000000000000")
    text = str(info.value)
    assert "does not know this task" in text and "recordInfo is null" in text
    assert "task_google_000000000000" in text and "14 days" in text
    assert "rejected the request's parameters" not in text  # not a parameter error
    assert info.value.final and info.value.task_id == "task_google_000000000000"
    assert sim.count("recordInfo") == 1  # the service's last word: not asked again


def test_following_an_unknown_task_ends_it_for_good_with_that_word(live_like):
    sim, client = live_like
    job = client.track("task_google_000000000001")
    with pytest.raises(NotFoundError, match="does not know this task"):
        job.result(10)
    assert job.error.final
