"""generate_many over real sockets against the simulator: concurrency, shared 429 backoff, resume, lost tasks."""
from __future__ import annotations

import json
import sys
import types
from collections import Counter

import pytest
from conftest import KEY
from conftest import session_on as make_session

from imagen4_jupyter import InvalidRequestError, PollSchedule, RetryPolicy, generate_many
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.simulator import Simulator


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def sim_prompt(task) -> str:
    return task.param["input"]["prompt"]


def test_batch_of_50_with_concurrency_4_against_a_rate_limited_service_loses_nothing(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.05), generation_time=(0.1, 0.2), image_scale=0.0625,
                   rate_limit=(24, 1.0)) as sim:
        # Status checks share the rate limit; Retry-After (>= 1 s) is honoured fully by the batch.
        session = make_session(sim, tmp_path, poll=PollSchedule.fixed(0.1, max_wait=60.0),
                               retry=RetryPolicy(attempts=5, base=0.05, cap=0.5))
        prompts = [f"a lighthouse, study {i}" for i in range(50)]
        try:
            result = generate_many(prompts, session=session, concurrency=4, progress=False)
        finally:
            session.close()

        # every item has its task and its images; nothing lost
        assert result.ok, result.counts()
        assert result.lost == []
        for item, prompt in zip(result, prompts, strict=True):
            assert item.request.prompt == prompt and item.task_id and item.origin == "created"
            assert len(item.images) == 1 and item.images[0].path.exists()

        # exactly one task per item, none duplicated
        tasks = sim.tasks
        assert len(tasks) == 50
        assert sorted(result.task_ids) == sorted(tasks)
        assert Counter(sim_prompt(t) for t in tasks.values()) == Counter(prompts)

        # 429s really happened: createTask requests that created no task were refused by the rate limit
        refused = sim.count("createTask") - len(tasks)
        assert refused > 0
        assert refused == result.stats["rate_limited"]
        assert sim.count("createTask") == 50 + result.stats["rate_limited"] == result.stats["create_requests"]
        # one shared backoff: a pause catches at most the requests already in flight, and lasts >= Retry-After
        assert 1 <= result.stats["pauses"] <= refused <= 4 * result.stats["pauses"]
        assert result.stats["paused_s"] >= result.stats["pauses"] * 0.99

        # never more than 4 tasks at once: measured on the simulator's own timeline and by the batch
        spans = [(t.create_time, t.create_time + t.queue_duration + t.generation_duration) for t in tasks.values()]
        assert max_overlap(spans) <= 4
        assert result.stats["max_in_flight"] == 4

        # the history holds one submitted event per task, tagged with the batch and the index
        submitted = [e for e in session.history.iter_events() if e["event"] == "submitted"]
        assert sorted(e["batch"]["index"] for e in submitted) == list(range(50))
        print(f"\nbatch of 50: {result.stats['wall_s']:.1f} s, {refused} x 429, "
              f"{result.stats['pauses']} pauses, lost {len(result.lost)}")


def test_resuming_a_half_done_batch_creates_tasks_only_for_what_was_never_sent(tmp_path):
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.0), generation_time=(0.05, 0.1),
                   image_scale=0.0625) as sim:
        # tasks 0-2 finish at once, tasks 3-5 take 2 s; the batch stops submitting after 1 s, so 6-8 are never sent
        sim.next_outcomes.extend([{"generation_time": 0.05}] * 3 + [{"generation_time": 2.0}] * 3)
        prompts = [f"a fox in the snow, variation {i}" for i in range(9)]  # unseeded: only the batch tag matches
        first = make_session(sim, tmp_path)
        half = generate_many(prompts, session=first, concurrency=3, timeout=1.0, progress=False)
        done = [i.index for i in half if i.state == "success"]
        running = [i.index for i in half if i.state == "running"]
        never = [i.index for i in half if i.state == "not-submitted"]
        first.close()  # the kernel dies: tasks in flight stay unfinished in the history
        assert (done, running, never) == ([0, 1, 2], [3, 4, 5], [6, 7, 8]), half.counts()
        created_before = sim.count("createTask")
        assert created_before == len(done) + len(running)

        second = make_session(sim, tmp_path)  # a new kernel, same history
        try:
            again = generate_many(prompts, session=second, concurrency=3, progress=False)
        finally:
            second.close()
        assert again.ok, again.counts()
        assert sim.count("createTask") - created_before == len(never)
        assert len(sim.tasks) == 9 and Counter(sim_prompt(t) for t in sim.tasks.values()) == Counter(prompts)
        origins = {i.index: i.origin for i in again}
        assert {k for k, v in origins.items() if v == "reused"} == set(done)
        assert {k for k, v in origins.items() if v == "followed"} == set(running)
        assert {k for k, v in origins.items() if v == "created"} == set(never)
        for i in done + running:
            assert again[i].task_id == half[i].task_id

        # a third run costs nothing at all; force=True makes new tasks
        third = make_session(sim, tmp_path)
        try:
            before = sim.count("createTask")
            assert generate_many(prompts, session=third, progress=False).stats["reused"] == 9
            assert sim.count("createTask") == before
            forced = generate_many(prompts[:2], session=third, force=True, progress=False)
            assert sim.count("createTask") == before + 2 and forced.ok
        finally:
            third.close()


def test_seeded_requests_are_reused_across_batches_by_policy(sim, tmp_path):
    session = make_session(sim, tmp_path)
    try:
        one = generate_many(["a red kite", "a blue kite"], session=session, seed=7, progress=False)
        assert one.ok and sim.count("createTask") == 2
        # another batch (different list) with one identical seeded request and one new one
        two = generate_many(["a blue kite", "a green kite"], session=session, seed=7, progress=False)
        assert sim.count("createTask") == 3
        assert [i.origin for i in two] == ["reused", "created"]
        assert two[0].images[0].sha256 == one[1].images[0].sha256
        never = generate_many(["a blue kite"], session=session, seed=7, reuse="never", progress=False)
        assert never[0].origin == "created" and sim.count("createTask") == 4
    finally:
        session.close()


def test_every_item_is_validated_before_anything_is_sent(sim, client):
    bad = ["a cat", {"prompt": "a dog", "aspect_ratio": "2:1"}, "a cow"]
    with pytest.raises(InvalidRequestError, match=r"Item 1 \('a dog'\): Aspect ratio '2:1'.*Nothing was sent"):
        generate_many(bad, client=client, progress=False)
    with pytest.raises(InvalidRequestError, match=r"Item 2: .*prompt is empty"):
        generate_many(["a", "b", "   "], client=client, progress=False)
    with pytest.raises(InvalidRequestError, match=r"Item 0 .*unknown field\(s\) colour"):
        generate_many([{"prompt": "a", "colour": "red"}], client=client, progress=False)
    with pytest.raises(InvalidRequestError, match="Unknown option"):
        generate_many(["a"], client=client, progress=False, ratio="16:9")
    with pytest.raises(InvalidRequestError, match="concurrency"):
        generate_many(["a"], client=client, progress=False, concurrency=0)
    with pytest.raises(InvalidRequestError, match="list of prompts"):
        generate_many("just one prompt", client=client, progress=False)
    assert sim.count("createTask") == 0


def test_items_dicts_and_requests_with_defaults_are_sent_as_given(sim, client):
    items = ["plain", {"prompt": "wide", "aspect_ratio": "16:9", "seed": 3},
             GenerationRequest.create("as built", num_images=2, aspect_ratio="3:4")]
    result = generate_many(items, client=client, aspect_ratio="4:3", negative_prompt="blur", progress=False)
    assert result.ok
    sent = {sim_prompt(t): t.param["input"] for t in sim.tasks.values()}
    assert sent["plain"]["aspect_ratio"] == "4:3" and sent["plain"]["negative_prompt"] == "blur"
    assert sent["wide"]["aspect_ratio"] == "16:9" and sent["wide"]["seed"] == "3"
    assert sent["as built"]["aspect_ratio"] == "3:4" and "negative_prompt" not in sent["as built"]
    assert len(result[2].images) == 2
    rows = result.rows
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[1]["params"] == {"negative_prompt": "blur", "aspect_ratio": "16:9", "num_images": 1, "seed": "3"}
    assert rows[2]["state"] == "success" and len(rows[2]["images"]) == 2 and rows[2]["error"] is None
    assert rows[0]["task_id"] in sim.tasks
    page = result._repr_html_()
    assert "data:image/jpeg;base64," in page and rows[0]["task_id"] in page and "&lt;" not in "as built"


def test_html_escapes_prompts(sim, client):
    result = generate_many(["<script>alert(1)</script> a cat"], client=client, progress=False)
    page = result._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_unknown_create_outcome_is_reported_lost_and_never_resent(sim, tmp_path):
    session = make_session(sim, tmp_path)
    try:
        sim.inject("createTask", times=1, drop_after=True)  # created and billed, but no answer
        result = generate_many(["one", "two", "three"], session=session, concurrency=1, progress=False)
        assert [i.state for i in result] == ["lost-unknown", "success", "success"]
        assert "NOT resent" in result.rows[0]["error"]
        assert len(result.lost) == 1 and sim.count("createTask") == 3 and len(sim.tasks) == 3
        # running the batch again does not resend it either, and creates nothing else
        again = generate_many(["one", "two", "three"], session=session, concurrency=1, progress=False)
        assert [i.state for i in again] == ["lost-unknown", "success", "success"]
        assert "force=True" in again.rows[0]["error"]
        assert sim.count("createTask") == 3
    finally:
        session.close()


def test_rejected_key_stops_the_batch_after_the_first_answer(sim, make_client):
    client = make_client(api_key="wrong-key-0123456789")
    result = generate_many([f"p{i}" for i in range(8)], client=client, concurrency=1, progress=False)
    states = Counter(i.state for i in result)
    assert states == {"error": 1, "not-submitted": 7}
    assert "API key" in result.rows[0]["error"] and "API key" in result.rows[5]["error"]
    assert sim.count("createTask") == 1 and not sim.tasks


def test_generation_failure_is_a_row_not_an_exception(sim, client):
    sim.next_outcomes.append({"fail": ("400", "prompt filtered")})
    result = generate_many(["bad", "good"], client=client, concurrency=1, progress=False)
    assert [i.state for i in result] == ["fail", "success"]
    assert "prompt filtered" in result.rows[0]["error"] and result.rows[0]["task_id"] in sim.tasks


def test_progress_prints_a_plain_line_outside_ipython(sim, client, capsys):
    generate_many(["a", "b", "c"], client=client, progress=True)
    err = capsys.readouterr().err
    assert "imagen4 batch: 3/3 done" in err.splitlines()[-1]


def test_to_dataframe_builds_one_row_per_item(sim, client, monkeypatch):
    result = generate_many(["a", {"prompt": "b", "seed": 5}], client=client, progress=False)
    captured = {}

    class FakeFrame:
        def __init__(self, records, columns):
            captured.update(records=records, columns=columns)

        def set_index(self, name):
            captured["index"] = name
            return self

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=types.SimpleNamespace(
        from_records=lambda records, columns: FakeFrame(records, columns))))
    result.to_dataframe()
    assert captured["index"] == "index"
    assert captured["columns"][:6] == ["index", "prompt", "negative_prompt", "aspect_ratio", "num_images", "seed"]
    assert captured["records"][1]["seed"] == "5" and captured["records"][1]["state"] == "success"
    json.dumps(captured["records"])  # plain values only


def test_to_dataframe_with_real_pandas(sim, client):
    import pandas as pd  # a test dependency (pyproject [test]): missing, the test fails rather than skips
    frame = pd.DataFrame({"prompt": ["x", "y"], "seed": [1, None], "notes": ["n", "m"]})
    result = generate_many(frame, client=client, progress=False)
    df = result.to_dataframe()
    assert list(df["state"]) == ["success", "success"]
    assert df["seed"][0] == "1" and pd.isna(df["seed"][1])  # 1.0 from the float column sent as "1"; NaN = no seed
    assert result.items[1].request.seed is None


def test_without_pandas_to_dataframe_says_what_to_do(sim, client, monkeypatch):
    result = generate_many(["a"], client=client, progress=False)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        result.to_dataframe()


def test_a_429_pauses_every_submission_until_retry_after_has_passed(sim, make_client):
    # the client's RetryPolicy gives the pause: its Retry-After, within max_retry_after
    client = make_client(retry=RetryPolicy(attempts=5, base=0.01, cap=0.05, max_retry_after=5.0))
    sim.inject("createTask", times=1, code=429, retry_after=1)  # the first createTask is refused
    result = generate_many([f"p{i}" for i in range(6)], client=client, concurrency=4, progress=False)
    assert result.ok and len(sim.tasks) == 6
    creates = sorted(r.time for r in sim.requests if r.endpoint == "createTask")
    assert len(creates) == 7 and result.stats["rate_limited"] == 1 and result.stats["pauses"] == 1
    # requests 2-4 were already on their way; nothing else was sent until a second after the refusal
    assert creates[3] - creates[0] < 0.5
    assert creates[4] - creates[0] >= 0.95
    assert 0.95 <= result.stats["paused_s"] < 1.5


def test_the_shared_pause_is_the_clients_retry_policy_with_its_cap(sim, make_client):
    policy = RetryPolicy(attempts=5, base=0.01, cap=0.05, max_retry_after=0.3)
    client = make_client(retry=policy)
    sim.inject("createTask", times=1, code=429, retry_after=30)  # far beyond the policy's cap
    result = generate_many([f"q{i}" for i in range(3)], client=client, concurrency=1, progress=False)
    assert result.ok and result.stats["rate_limited"] == 1 and result.stats["pauses"] == 1
    creates = sorted(r.time for r in sim.requests if r.endpoint == "createTask")
    assert len(creates) == 4
    # one item in flight: the refused one is sent again after the capped pause (0.3 s), not after 30 s
    assert 0.28 <= creates[1] - creates[0] < 2.0
    assert result.stats["paused_s"] == pytest.approx(0.3, abs=0.01)


class MiniFrame:
    """The slice of the pandas DataFrame interface generate_many uses (columns, [cols], to_dict('records'))."""

    def __init__(self, data: dict[str, list]):
        self.data = data
        self.columns = list(data)

    def __getitem__(self, cols):
        return MiniFrame({c: self.data[c] for c in cols})

    def to_dict(self, orient):
        assert orient == "records"
        n = len(next(iter(self.data.values())))
        return [{c: v[i] for c, v in self.data.items()} for i in range(n)]


def test_a_dataframe_gives_one_item_per_row_with_gaps_filled_by_defaults(sim, client):
    frame = MiniFrame({"prompt": ["x", "y"], "seed": [7.0, float("nan")], "notes": ["ignored", "too"]})
    result = generate_many(frame, client=client, aspect_ratio="3:4", seed=99, progress=False)
    assert result.ok
    sent = {sim_prompt(t): t.param["input"] for t in sim.tasks.values()}
    assert (sent["x"]["seed"], sent["y"]["seed"]) == ("7", "99") and sent["y"]["aspect_ratio"] == "3:4"
    with pytest.raises(InvalidRequestError, match="no `prompt` column"):
        generate_many(MiniFrame({"text": ["x"]}), client=client, progress=False)


def test_batch_uses_public_hooks_one_create_attempt_and_tagged_unknown_outcome(sim, tmp_path):
    import inspect

    from imagen4_jupyter import RateLimitError
    from imagen4_jupyter.research import batch as B

    source = inspect.getsource(B)
    assert "._call(" not in source and "._adopt(" not in source and '"_call"' not in source
    session = make_session(sim, tmp_path)
    try:
        sim.inject("createTask", code=429)
        with pytest.raises(RateLimitError):  # one attempt: the 429 is the caller's to handle
            session.client.create_task(GenerationRequest.create("x"), retry_rate_limits=False)
        assert sim.count("createTask") == 1
        sim.inject("createTask", code=429)
        session.client.create_task(GenerationRequest.create("x"))  # the default still retries it
        assert sim.count("createTask") == 3
        sim.inject("createTask", times=1, drop_after=True)
        with pytest.raises(B.E.OutcomeUnknownError):
            session.submit(GenerationRequest.create("y"), force=True, source="batch", cell=4,
                           extra={"batch": {"id": "b", "index": 2}}, retry_rate_limits=False, queue=False)
        (ev,) = [e for e in session.history.iter_events() if e.get("event") == "outcome_unknown"]
        assert ev["batch"] == {"id": "b", "index": 2} and ev["source"] == "batch" and ev["cell"] == 4
    finally:
        session.close()


def test_wait_false_returns_at_once_stop_sends_nothing_more_and_a_second_start_is_refused(sim, tmp_path):
    import time

    session = make_session(sim, tmp_path)
    try:
        sim.next_outcomes.extend([{"generation_time": 0.5}] * 2)
        prompts = [f"bg {i}" for i in range(6)]
        t0 = time.monotonic()
        result = generate_many(prompts, session=session, concurrency=2, progress=False, wait=False)
        assert time.monotonic() - t0 < 0.3 and result.submitting
        with pytest.raises(InvalidRequestError, match="still being submitted"):
            generate_many(prompts, session=session, progress=False)
        for _ in range(200):  # both slots taken, then stop: the other four are never sent
            if sum(i.state == "running" for i in result) == 2:
                break
            time.sleep(0.01)
        result.stop()
        result.wait(10)
        assert not result.submitting
        assert Counter(i.state for i in result) == {"success": 2, "not-submitted": 4}
        assert sim.count("createTask") == 2
        again = generate_many(prompts, session=session, concurrency=2, progress=False)  # resumes it
        assert again.ok and sim.count("createTask") == 6
        assert Counter(i.origin for i in again) == {"reused": 2, "created": 4}
    finally:
        session.close()


def test_rerunning_a_batch_in_the_same_kernel_keeps_following_its_live_jobs(sim, tmp_path):
    import time

    sim.next_outcomes.extend([{"generation_time": 0.05}] * 2 + [{"generation_time": 3.0}] * 2)
    prompts = [f"a heron, take {i}" for i in range(4)]
    session = make_session(sim, tmp_path)
    try:
        half = generate_many(prompts, session=session, concurrency=4, timeout=0.5, progress=False)
        deadline = time.monotonic() + 10
        while sum(i.state == "success" for i in half) < 2 and time.monotonic() < deadline:  # the 0.05 s ones
            time.sleep(0.02)
        running = [i.index for i in half if i.state == "running"]
        assert len(running) == 2, half.counts()  # which two: the order createTask requests arrived in
        again = generate_many(prompts, session=session, concurrency=4, progress=False)
        assert again.ok and sim.count("createTask") == 4
        assert [i.origin for i in again] == ["followed" if i in running else "reused" for i in range(4)]
        for i in running:  # the session's live job: the task is not tracked a second time
            assert again[i].job is half[i].job and again[i].job is session.jobs[again[i].task_id]
    finally:
        session.close()


def test_a_rerun_follows_only_its_own_tasks_not_every_unfinished_one(sim, tmp_path):
    sim.next_outcomes.extend([{"generation_time": 0.05}, {"generation_time": 4.0}, {"generation_time": 4.0}])
    first = make_session(sim, tmp_path)  # one at a time: the crane (quick), then the stork (slow)
    half = generate_many(["a crane", "a stork"], session=first, concurrency=1, timeout=1.5, progress=False)
    assert [i.state for i in half] == ["success", "running"]
    other = first.submit(GenerationRequest.create("not in the batch"), force=True, queue=False)  # unfinished
    first.close()  # the kernel dies
    assert {e.task_id for e in first.history.unfinished()} == {half[1].task_id, other.task_id}

    second = make_session(sim, tmp_path)
    try:
        again = generate_many(["a crane", "a stork"], session=second, progress=False)
        assert again.ok and [i.origin for i in again] == ["reused", "followed"]
        assert other.task_id not in second.jobs  # resumed only what the batch needs
        polled = {r.query.get("taskId") for r in sim.requests if r.endpoint == "recordInfo"}
        assert half[1].task_id in polled
        assert [e.task_id for e in second.history.unfinished()] == [other.task_id]
    finally:
        second.close()


def test_a_create_that_never_left_is_sent_again_then_the_batch_gives_up(make_client):
    import socket

    from imagen4_jupyter.research import batch as B

    with socket.socket() as s:  # a loopback port nobody listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}")
    result = generate_many(["one", "two"], client=client, concurrency=1, progress=False)
    assert [i.state for i in result] == ["error", "not-submitted"]
    assert result[0].error.not_sent and "Connection problem" in result.rows[0]["error"]
    # certainly not sent, so resent (never for an unknown outcome) until the batch's limit of refusals
    assert result.stats["not_sent_retries"] == B.MAX_CONSECUTIVE_429 + 1
    assert result.stats["create_requests"] == B.MAX_CONSECUTIVE_429 + 1 and result.stats["created"] == 0


def test_the_default_session_is_the_registered_one(sim, tmp_path):
    from imagen4_jupyter.records import session as S
    from imagen4_jupyter.research.batch import default_session

    session = make_session(sim, tmp_path)
    S.set_session(session)
    try:
        assert default_session() is session
        result = generate_many(["registered"], progress=False)
        assert result.ok and result[0].task_id in session.jobs
        assert session.history.get(result[0].task_id).source == "batch"
    finally:
        S.set_session(None)
        session.close()


@pytest.fixture
def session(sim, tmp_path):
    s = make_session(sim, tmp_path)
    yield s
    s.close()


# -- the model in a batch -----------------------------------------------------------------------------
def test_each_item_is_sent_with_its_own_model_and_the_table_shows_it(sim, session):
    items = ["a kite", {"prompt": "a boat", "model": "ultra"}, {"prompt": "a train", "model": "google/imagen4"},
             GenerationRequest.create("a plane", model="ultra")]
    result = generate_many(items, session=session, model="fast", seed=3, progress=False)
    assert result.ok, result.counts()
    sent = {t.param["input"]["prompt"]: t.model for t in sim.tasks.values()}
    assert sent == {"a kite": "google/imagen4-fast", "a boat": "google/imagen4-ultra",
                    "a train": "google/imagen4", "a plane": "google/imagen4-ultra"}
    assert [row["model"] for row in result.rows] == ["fast", "ultra", "standard", "ultra"]
    assert Counter(c.model for c in sim.charges) == {"google/imagen4-ultra": 2, "google/imagen4-fast": 1,
                                                     "google/imagen4": 1}
    assert "ultra · 1:1" in result._repr_html_() and "fast · 16:9" in result._repr_html_()


def test_per_model_validation_names_the_item_and_sends_nothing(sim, session):
    with pytest.raises(InvalidRequestError, match=r"Item 2 \('three'\): Imagen 4 Ultra \(ultra\) makes one image"):
        generate_many(["one", "two", {"prompt": "three", "model": "ultra"}], session=session, num_images=2,
                      progress=False)
    with pytest.raises(InvalidRequestError, match=r"Item 1 \('b'\): Imagen 4 Fast \(fast\) takes a whole-number"):
        generate_many(["a", {"prompt": "b", "seed": "abc"}], session=session, model="fast", progress=False)
    with pytest.raises(InvalidRequestError, match="Unknown model 'turbo'"):
        generate_many(["a"], session=session, model="turbo", progress=False)
    assert sim.count("createTask") == 0


def test_a_dataframe_model_column_with_gaps_takes_the_default(sim, session):
    import pandas as pd  # a test dependency (pyproject [test]): missing, the test fails rather than skips
    frame = pd.DataFrame({"prompt": ["x", "y", "z"], "model": ["ultra", None, "fast"]})
    result = generate_many(frame, session=session, model="fast", progress=False)
    assert [i.request.model for i in result] == ["google/imagen4-ultra", "google/imagen4-fast",
                                                 "google/imagen4-fast"]
    df = result.to_dataframe()
    assert list(df["model"]) == ["ultra", "fast", "fast"] and "note" in df.columns


def test_the_model_is_part_of_reuse_and_of_the_batch(sim, session):
    first = generate_many(["a lamp"], session=session, seed=1, model="fast", progress=False)
    again = generate_many(["a lamp"], session=session, seed=1, model="fast", progress=False)
    other = generate_many(["a lamp"], session=session, seed=1, model="ultra", progress=False)
    assert again[0].origin == "reused" and again[0].task_id == first[0].task_id
    assert other[0].origin == "created" and other[0].task_id != first[0].task_id
    assert first.batch_id != other.batch_id
    assert sim.count("createTask") == 2
