"""The per-notebook history: folding events, corrupt lines, concurrent writers, reuse lookup."""
from __future__ import annotations

import json
import multiprocessing
import warnings

import pytest

from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.location import find_notebook, history_path

REQ = GenerationRequest.create("a lighthouse at dusk", seed="7")


def submitted(h: History, tid: str, req: GenerationRequest = REQ) -> None:
    h.append({"event": "submitted", "task_id": tid, "request": req.to_dict(), "request_key": req.key()})


def succeeded(h: History, tid: str, path: str) -> None:
    h.append({"event": "succeeded", "task_id": tid, "urls": ["http://x/1.png"],
              "images": [{"path": path, "sha256": "0" * 64, "mime": "image/png", "width": 1, "height": 1,
                          "size": 1, "url": "http://x/1.png", "index": 0}]})


def test_service_success_is_not_done_until_images_are_stored(tmp_path):
    h = History(tmp_path / "h.jsonl")
    submitted(h, "t1")
    h.append({"event": "state", "task_id": "t1", "state": "success"})
    h.append({"event": "failed", "task_id": "t1", "kind": "DownloadError", "message": "x", "final": False})
    entry = h.get("t1")
    assert entry.state == "error" and not entry.finished
    assert [e.task_id for e in h.unfinished()] == ["t1"]


def test_fold_and_reuse_lookup(tmp_path):
    h = History(tmp_path / "h.jsonl")
    submitted(h, "t1")
    assert h.find_reusable(REQ) is None  # not finished
    img = tmp_path / ("0" * 64 + ".png")  # only content-addressed files (<sha256>.<ext>) are read back
    img.write_bytes(b"x")
    succeeded(h, "t1", img.name)
    assert h.find_reusable(REQ).task_id == "t1"
    assert h.find_reusable(REQ.replace(seed="8")) is None
    img.unlink()  # a result whose file is gone is not reused
    assert h.find_reusable(REQ) is None
    assert h.unfinished() == []


def test_a_second_reader_sees_appends_incrementally(tmp_path):
    a, b = History(tmp_path / "h.jsonl"), History(tmp_path / "h.jsonl")
    submitted(a, "t1")
    assert [e.task_id for e in b.entries()] == ["t1"]
    submitted(a, "t2")
    assert [e.task_id for e in b.entries()] == ["t1", "t2"]


@pytest.mark.filterwarnings("ignore:imagen4. skipped")  # the warning itself is asserted inside
def test_corrupt_lines_are_skipped_with_one_warning_and_never_rewritten(tmp_path):
    path = tmp_path / "h.jsonl"
    h = History(path)
    submitted(h, "good1")
    with open(path, "a") as fh:
        fh.write("this is not json\n")
        fh.write(json.dumps({"event": "submitted", "task_id": 42, "request": {}}) + "\n")  # wrong type
        fh.write(json.dumps({"event": "succeeded", "task_id": "good1", "images": "nope"}) + "\n")
        fh.write('["a list"]\n')
    submitted(h, "good2")
    with open(path, "a") as fh:
        fh.write('{"event": "submitted", "task_id": "torn", "requ')  # a crash mid-line
    before = path.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = History(path)
        ids = [e.task_id for e in fresh.entries()]
        fresh.entries()
    assert ids == ["good1", "good2"]
    assert len([w for w in caught if "unreadable" in str(w.message)]) == 1
    assert path.read_bytes() == before  # reading changes nothing
    submitted(fresh, "good3")  # appending after a torn line starts a new line and keeps every old byte
    after = path.read_bytes()
    assert after.startswith(before)
    assert [e.task_id for e in History(path).entries()] == ["good1", "good2", "good3"]


def _writer(path: str, worker: int, count: int) -> None:
    h = History(path)
    for i in range(count):
        h.append({"event": "state", "task_id": f"w{worker}-{i}", "state": "generating", "pad": "x" * 200})


def test_four_processes_append_4000_valid_records(tmp_path):
    path = tmp_path / "h.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 1000)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 4000
    assert {r["task_id"] for r in records} == {f"w{w}-{i}" for w in range(4) for i in range(1000)}


def test_notebook_detection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert find_notebook({}) == (None, "working directory")
    assert history_path(None) == tmp_path / ".imagen4" / "history.jsonl"
    nb = tmp_path / "sub" / "exp.ipynb"
    assert find_notebook({"__vsc_ipynb_file__": str(nb)}) == (nb, "VS Code")
    assert history_path(nb) == tmp_path / "sub" / ".imagen4" / "exp.jsonl"
    monkeypatch.setenv("JPY_SESSION_NAME", str(nb))
    assert find_notebook({}) == (nb, "JPY_SESSION_NAME")
    assert find_notebook({}, "other.ipynb")[1] == "configuration"


@pytest.mark.parametrize("bad", ["", "{}", '{"event": 3}', '{"event": "state"}'])
def test_each_kind_of_bad_line_counts_once(tmp_path, bad):
    path = tmp_path / "h.jsonl"
    path.write_text(bad + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = History(path)
        assert h.entries() == []
    assert h.bad_lines == (1 if bad else 0)


def test_wait_returns_only_after_the_final_event_is_written(make_client, tmp_path):
    from imagen4_jupyter.records.session import Session

    session = Session(client=make_client(), history=History(tmp_path / "nb.jsonl"))
    for i in range(20):
        job = session.submit(GenerationRequest.create(f"prompt {i}"))
        job.wait(10)
        events = [json.loads(line) for line in (tmp_path / "nb.jsonl").read_text().splitlines()]
        assert any(e["event"] == "succeeded" and e["task_id"] == job.task_id for e in events)


def test_a_job_rebuilt_from_the_history_keeps_its_own_duration(make_client, tmp_path):
    from imagen4_jupyter.records.session import Session

    path = tmp_path / "nb.jsonl"
    session = Session(client=make_client(), history=History(path))
    job = session.submit(GenerationRequest.create("a kite", seed=5))
    job.wait(10)
    # pretend it was submitted two days ago: a rebuilt job must not report two days of elapsed time
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for ev in lines:
        ev["time"] -= 2 * 86400
    path.write_text("".join(json.dumps(ev) + "\n" for ev in lines))
    rebuilt = Session(client=make_client(), history=History(path)).job_from_history(History(path).get(job.task_id))
    assert rebuilt.done() and rebuilt.elapsed < 60


def test_only_store_files_on_disk_count_as_a_stored_result(tmp_path):
    h = History(tmp_path / "h.jsonl")
    private = tmp_path / "private.png"  # exists, but is no store file: never shown as a result
    private.write_bytes(b"x")
    sha = "ab" * 32
    store_file = tmp_path / f"{sha}.png"
    for tid, path, digest in (("t1", "private.png", sha), ("t2", store_file.name, sha)):
        submitted(h, tid, REQ.replace(seed=tid))
        h.append({"event": "succeeded", "task_id": tid, "urls": ["http://x/1.png"],
                  "images": [{"path": path, "sha256": digest, "mime": "image/png", "width": 1, "height": 1,
                              "size": 1, "url": "http://x/1.png", "index": 0}]})
    assert not h.images_on_disk(h.get("t1"))
    assert not h.images_on_disk(h.get("t2"))  # a store name, but the file is gone
    store_file.write_bytes(b"x")
    assert h.images_on_disk(h.get("t2"))
    assert h.find_reusable(REQ.replace(seed="t1")) is None and h.find_reusable(REQ.replace(seed="t2")).task_id == "t2"


def test_a_replaced_file_is_read_afresh_under_the_same_lock(tmp_path):
    """Reading a history whose file was replaced by a shorter one starts over without replacing the lock: a
    thread inside (holding it) keeps every other reader and writer out until it leaves."""
    import threading
    import time

    h = History(tmp_path / "h.jsonl")
    for i in range(5):
        submitted(h, f"t{i}")
    other = History(tmp_path / "other.jsonl")
    submitted(other, "fresh")
    lock = h._lock
    other.path.replace(h.path)  # someone else replaced the file: it is shorter than what h has read
    appended = threading.Event()

    def writer() -> None:
        submitted(h, "late")
        appended.set()

    with lock:
        h.refresh()  # the reset path, while this thread holds the lock
        assert h._lock is lock
        assert sorted(h.tasks) == ["fresh"]  # read afresh from the new file
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.2)
        assert not appended.is_set()  # the writer waits for the lock this thread holds
    thread.join(5)
    assert appended.is_set() and sorted(e.task_id for e in h.entries()) == ["fresh", "late"]


def test_a_reused_event_folds_into_a_finished_task_with_its_origin(tmp_path):
    h = History(tmp_path / "copy.jsonl")
    img = tmp_path / ("1" * 64 + ".png")
    img.write_bytes(b"x")
    h.append({"event": "reused", "task_id": "t9", "from": "study.jsonl", "request": REQ.to_dict(),
              "request_key": REQ.key(), "urls": ["http://x/1.png"], "submitted_at": 100.0, "finished_at": 112.5,
              "cost_time_ms": 900, "source": "magic",
              "images": [{"path": img.name, "sha256": "1" * 64, "mime": "image/png", "index": 0}]})
    entry = h.get("t9")
    assert entry.succeeded and entry.finished and entry.state == "success" and entry.origin == "study.jsonl"
    assert (entry.submitted_at, entry.finished_at, entry.cost_time_ms) == (100.0, 112.5, 900)
    assert entry.request == REQ.to_dict() and h.find_reusable(REQ).task_id == "t9"
    assert h.unfinished() == [] and [e.task_id for e in h.search("lighthouse")] == ["t9"]
    assert entry.generating_since_ms is None  # a reuse teaches the polling schedule nothing


@pytest.mark.filterwarnings("ignore:imagen4. skipped")
def test_a_malformed_reused_event_is_an_unreadable_line(tmp_path):
    h = History(tmp_path / "copy.jsonl")
    h.append({"event": "reused", "task_id": "t1", "from": "study.jsonl", "request": "not a dict", "images": []})
    h.refresh()
    assert h.bad_lines == 1 and h.find_reusable(REQ) is None
