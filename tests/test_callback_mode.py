"""Callback mode against the simulator's real, signed callbacks (delivered to the receiver's loopback port):
small lag, at most two status checks per task, forged and replayed POSTs refused, and "outcome unknown"
resolved by the callback that names the task."""
from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import KEY

from imagen4_jupyter import GenerationRequest, OutcomeUnknownError, PollSchedule
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.records.callback_hub import resolved_refs
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

WEBHOOK = "whk-callback-mode-secret"


@pytest.fixture
def hsim():
    """The documented limits on, signed callbacks, tasks of about half a second."""
    with Simulator(api_keys=(KEY,), queue_time=(0.05, 0.1), generation_time=(0.3, 0.5), image_scale=0.0625,
                   webhook_key=WEBHOOK) as s:
        yield s


@pytest.fixture
def session(hsim, tmp_path, monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    s = Session(history_folder=str(tmp_path / "h"), client_options=dict(
        api_key=KEY, base_url=hsim.url, cache_dir=tmp_path / "cache", timeout=(2.0, 5.0),
        schedule=PollSchedule(), limits=Limits()))  # the provider's advised schedule: first check at 2.5 s
    hub = s.enable_callbacks(listen="127.0.0.1:0", webhook_key=WEBHOOK)
    assert hub.signed and hub.public_url.startswith("http://127.0.0.1:")
    yield s
    s.close()


def checks_of(sim, task_id: str) -> int:
    return sum(1 for r in sim.requests if r.endpoint == "recordInfo" and r.query.get("taskId") == task_id)


def completed_wall(sim, task_id: str) -> float:
    task = sim.task(task_id)
    return task.create_time + (task.complete_mono - task.create_mono)


def test_callbacks_bring_the_images_at_once_with_at_most_two_status_checks(hsim, session):
    jobs = [session.submit(GenerationRequest.create(f"a lighthouse {i}", seed=i)) for i in range(6)]
    for job in jobs:
        assert job.result(15).images
    for job in jobs:
        url = json.loads(next(r.body for r in hsim.requests if r.endpoint == "createTask"
                              and json.loads(r.body)["input"]["seed"] == job.request.seed))["callBackUrl"]
        assert url.startswith(session.callbacks.public_url + "/")
        lag = job.finished_at - completed_wall(hsim, job.task_id)
        assert lag < 1.0, lag  # polling alone would first look after 2.5 s
        assert checks_of(hsim, job.task_id) <= 2
    assert all(d.status == 200 and d.headers for d in hsim.deliveries)  # signed, accepted
    assert session.callbacks.hints == len(jobs) and session.callbacks.ignored == 0
    assert hsim.count_429() == 0


def test_forged_unsigned_stale_and_replayed_callbacks_are_refused_and_cost_no_request(hsim, session):
    job = session.submit(GenerationRequest.create("the genuine one", seed=1))
    job.result(15)
    hsim.wait_for_callbacks(1)
    before = hsim.count("recordInfo")
    for forge in ("unsigned", "bad_signature", "stale", "wrong_task", "replay"):
        assert hsim.send_callback(job.task_id, forge=forge).status == 403, forge
    refused = session.callbacks.receiver.refused
    assert refused == {"unsigned": 1, "bad signature": 2, "stale timestamp": 1, "replayed": 1}
    # a genuine, signed callback of another task sent to this task's URL: accepted, but not followed
    other = session.client.create_task(GenerationRequest.create("someone else's task",
                                                                callback_url="http://127.0.0.1:9/elsewhere"))
    time.sleep(0.8)
    own_url = hsim.deliveries[0].url
    assert hsim.send_callback(other, url=own_url).status == 200
    time.sleep(0.3)
    assert session.callbacks.ignored == 1
    assert hsim.count("recordInfo") == before  # nothing of all this cost a status request
    assert other not in session.jobs


def test_a_lost_create_answer_is_resolved_by_the_callback_naming_the_task(hsim, session):
    hsim.inject("createTask", drop_after=True)  # the task is created and billed, the answer never arrives
    request = GenerationRequest.create("answer lost on the way", seed=7)
    with pytest.raises(OutcomeUnknownError):
        session.submit(request, queue=False)
    deadline = time.monotonic() + 10
    while not session.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(session.jobs) == 1, "the callback did not resolve the unknown outcome"
    (task_id, job), = session.jobs.items()
    assert job.result(15).images and job.request.key() == request.key()
    assert hsim.count("createTask") == 1 and list(hsim.tasks) == [task_id]  # never resent, no second task
    events = [json.loads(x) for x in session.history.path.read_text().splitlines()]
    assert events[0]["event"] == "queued" and events[0]["request_key"] == request.key()  # written ahead
    assert events[1]["event"] == "sending" and events[1]["local_id"] == events[0]["local_id"]
    events = events[2:]
    assert [e["event"] for e in events][:2] == ["outcome_unknown", "submitted"]
    unknown, found = events[0], events[1]
    assert found["task_id"] == task_id and found["found_by"] == "callback"
    assert found["resolves"] == unknown["callback_ref"] and found["request_key"] == request.key()
    assert events[-1]["event"] == "succeeded" and events[-1]["task_id"] == task_id
    token = hsim.task(task_id).callback_url.rsplit("/", 1)[-1]
    assert token not in session.history.path.read_text()  # only its digest is kept
    assert resolved_refs(session.history) == {unknown["callback_ref"]}
    assert session.history.unfinished() == [] and session.callbacks.resolved == [task_id]


def test_the_users_own_callback_url_wins_and_gets_no_hint(hsim, session):
    job = session.submit(GenerationRequest.create("mine", callback_url="https://hooks.example.org/mine"),
                         queue=False)
    body = json.loads([r for r in hsim.requests if r.endpoint == "createTask"][-1].body)
    assert body["callBackUrl"] == "https://hooks.example.org/mine"
    assert job.result(15).images  # found by polling (the advised schedule, not stretched)
    assert session.callbacks.hints == 0


def test_a_loopback_callback_url_gets_the_clear_word(session):
    assert "cannot reach 127.0.0.1" in session.callbacks.unreachable
    hub = session.enable_callbacks("https://hooks.example.org/imagen4", listen="127.0.0.1:0")
    assert hub.unreachable is None and session.client.callback_hints is hub
    assert "whk" not in repr(hub) and "signed" in repr(hub)  # no key in reprs (APIKLEY_WEBHOOK_KEY unset here)
    session.disable_callbacks()
    assert session.callbacks is None and session.client.payload_for(GenerationRequest.create("x")).get(
        "callBackUrl") is None


def test_pokes_coalesce_into_one_extra_check(sim, make_client):
    client = make_client(schedule=PollSchedule.fixed(30.0, max_wait=60.0))
    job = client.submit("poked")
    time.sleep(0.2)
    before = sim.count("recordInfo")
    for _ in range(10):
        assert client.poller.poke(job.task_id)
    assert job.result(5).images
    assert sim.count("recordInfo") - before == 1
    assert client.poller.poke(job.task_id) is False  # a task no longer followed


def test_the_magic_turns_callbacks_on_by_configuration_and_never_shows_the_webhook_key(hsim, tmp_path, monkeypatch,
                                                                                       caplog):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from imagen4_jupyter.notebook import magics as M
    from imagen4_jupyter.records import session as S

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)
    monkeypatch.setenv("APIKLEY_BASE_URL", hsim.url)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.setenv("APIKLEY_WEBHOOK_KEY", WEBHOOK)  # the webhook key's ways: environment, .env, masked prompt
    shell = InteractiveShell.instance()
    with capture_output():
        magics = M.load(shell)
    try:
        with capture_output() as cap:
            shell.run_line_magic("config", "Imagen4Magics.webhook_key = 'typed-in-a-cell-123'")  # refused
            shell.run_line_magic("config", "Imagen4Magics.callback_listen = '127.0.0.1:0'")
            shell.run_line_magic("config", "Imagen4Magics.callback_listen = '127.0.0.1:0'")  # again: same receiver
            shell.run_line_magic("config", "Imagen4Magics")
        hub = magics.session.callbacks
        assert hub is not None and hub.signed
        refusal = [r.getMessage() for r in caplog.records if "webhook_key" in r.getMessage()]
        assert len(refusal) == 1 and "\n" not in refusal[0] and "%imagen4 webhook-key" in refusal[0]
        assert "APIKLEY_WEBHOOK_KEY" in refusal[0] and "typed-in-a-cell-123" not in refusal[0] + cap.stdout
        assert magics.webhook_key == ""  # the value was not kept
        assert cap.stdout.count("callbacks on at http://127.0.0.1:") == 1 and "cannot reach 127.0.0.1" in cap.stdout
        assert WEBHOOK not in cap.stdout
        receivers = [t for t in threading.enumerate() if t.name == "imagen4-callbacks" and t.is_alive()]
        assert len(receivers) == 1
        magics.session.configure_client(schedule=PollSchedule())
        with capture_output():
            shell.run_cell("%%imagen4 --wait -o job\ncalled back")
        job = shell.user_ns["job"]
        assert job.images and checks_of(hsim, job.task_id) <= 2 and hub.hints == 1
        assert WEBHOOK not in magics.session.history.path.read_text()
        hsim.inject("createTask", drop_after=True)
        with capture_output():
            shell.run_cell("%%imagen4 --wait -s 5\nanswer lost, task found")
        deadline = time.monotonic() + 10
        while len(hub.resolved) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        (found,) = hub.resolved
        magics.session.jobs[found].result(15)
        with capture_output() as cap:
            shell.run_line_magic("imagen4", "history")
        table = cap.stdout
        assert found in table and "answer lost, task found" in table and "outcome unknown" not in table
        with capture_output() as cap:
            shell.run_line_magic("config", "Imagen4Magics.callback_listen = ''")
        assert magics.session.callbacks is None and "callbacks off" in cap.stdout
    finally:
        session = magics.session
        M.unload(shell)
        session.close()
        S.set_session(None)
        shell.config.pop("Imagen4Magics", None)


def test_a_webhook_key_in_a_config_file_is_ignored_with_a_line_and_loading_goes_on(tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from imagen4_jupyter.notebook import magics as M
    from imagen4_jupyter.records import session as S

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.config.Imagen4Magics.webhook_key = "whk-in-a-config-file-42"
    try:
        with capture_output() as cap:
            magics = M.load(shell)
        assert magics.webhook_key == "" and "whk-in-a-config-file-42" not in cap.stdout + cap.stderr
        assert "imagen4: ignored: webhook_key is not set with %config" in cap.stdout
        assert "%imagen4 webhook-key" in cap.stdout and shell.find_cell_magic("imagen4") is not None
    finally:
        M.unload(shell)
        S.set_session(None)
        shell.config.pop("Imagen4Magics", None)
