"""Reuse across a `.imagen4/` folder: a duplicated notebook ("Copy1") pays nothing for its seeded cells, says
where the images came from, and its own history records the reuse; the other histories are read lazily, through
a small keys cache, and stay correct as they grow or are replaced."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from imagen4_jupyter.api.credentials import Credentials
from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records.folder import FolderHistories, folder_histories, origin_label
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

REQ = GenerationRequest.create("a lighthouse at dusk", seed="7")


def write_task(h: History, tid: str, req: GenerationRequest = REQ, *, simulated: bool = False,
               image: bool = True) -> Path:
    """A submitted + succeeded task with one content-addressed image file (created unless image=False)."""
    sha = (tid.encode().hex() * 64)[:64]
    path = h.folder / "images" / f"{sha}.png"
    if image:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png " + tid.encode())
    h.append({"event": "submitted", "task_id": tid, "request": req.to_dict(), "request_key": req.key(),
              "source": "magic", **({"simulated": True} if simulated else {})})
    h.append({"event": "state", "task_id": tid, "state": "success"})
    h.append({"event": "succeeded", "task_id": tid, "urls": [f"http://x/{tid}.png"], "cost_time_ms": 900,
              "images": [{"path": f"images/{sha}.png", "sha256": sha, "mime": "image/png", "width": 1,
                          "height": 1, "size": 8, "url": f"http://x/{tid}.png", "index": 0}]})
    return path


def test_a_copy_reuses_the_originals_task_records_it_and_says_from_where(make_client, sim, tmp_path):
    folder = tmp_path / ".imagen4"
    client = make_client(cache_dir=folder / "images")
    original = Session(client=client, history=History(folder / "study.jsonl"))
    first = original.submit(REQ)
    first.wait(10)
    assert sim.count("createTask") == 1

    copy = Session(client=client, history=History(folder / "study-Copy1.jsonl"))
    again = copy.submit(REQ)
    assert again.reused and again.task_id == first.task_id and sim.count("createTask") == 1
    assert [im.path.read_bytes() for im in again.images] == [im.path.read_bytes() for im in first.images]
    assert copy.reused_from(again.task_id) == "study.ipynb's history"
    assert original.reused_from(first.task_id) is None

    # the copy's own history reads complete: one `reused` event with the task id, request, images and origin
    events = [json.loads(line) for line in (folder / "study-Copy1.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["reused"]
    ev = events[0]
    assert ev["task_id"] == first.task_id and ev["from"] == "study.jsonl" and ev["request"] == REQ.to_dict()
    assert [im["sha256"] for im in ev["images"]] == [im.sha256 for im in first.images]
    alone = History(folder / "study-Copy1.jsonl")  # read on its own, as `%imagen4 history` does
    [entry] = alone.search()
    assert entry.task_id == first.task_id and entry.succeeded and entry.origin == "study.jsonl"
    assert alone.find_reusable(REQ).task_id == first.task_id

    # reused a second time: found in its own history now, not copied twice; a small `reuse` event counts it
    assert copy.submit(REQ).task_id == first.task_id
    lines = [json.loads(line) for line in (folder / "study-Copy1.jsonl").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["reused", "reuse"] and lines[1]["task_id"] == first.task_id
    assert History(folder / "study-Copy1.jsonl").search() == alone.search()  # the task reads as before
    assert len(list((folder / "images").glob("*.png"))) == len(first.images)
    assert sim.count("createTask") == 1

    # the policy still applies: unseeded requests and --force create tasks
    assert copy.find_reusable(REQ, "never") is None
    assert copy.find_reusable(REQ.replace(seed=None)) is None
    forced = copy.submit(REQ, force=True)
    forced.wait(10)
    assert not forced.reused and forced.task_id != first.task_id and sim.count("createTask") == 2


def test_simulated_results_never_stand_in_for_real_ones_across_histories(tmp_path):
    folder = tmp_path / ".imagen4"
    write_task(History(folder / "a.jsonl"), "t_sim", simulated=True)
    real = Session(history=History(folder / "b.jsonl"))
    assert real.find_reusable(REQ) is None
    simulated = Session(history=History(folder / "c.jsonl"))
    simulated.use_service(Credentials(key="sim-key", base_url="http://127.0.0.1:9"), simulated=True)
    entry = simulated.find_reusable(REQ)
    assert entry is not None and entry.task_id == "t_sim"
    job = simulated.job_from_history(entry, reused=True)
    assert simulated.is_simulated(job.task_id)
    assert json.loads((folder / "c.jsonl").read_text())["simulated"] is True
    # a real task in another history is the real session's
    write_task(History(folder / "d.jsonl"), "t_real")
    assert real.find_reusable(REQ).task_id == "t_real"


def test_newest_history_first_missing_files_and_other_folders(tmp_path):
    folder = tmp_path / ".imagen4"
    write_task(History(folder / "old.jsonl"), "t_old")
    path = write_task(History(folder / "new.jsonl"), "t_new")
    histories = FolderHistories(folder)
    assert histories.find_reusable(REQ, own=folder / "mine.jsonl").task_id in ("t_new", "t_old")
    path.unlink()  # the newest one's file is gone: the other history's task stands in
    found = histories.find_reusable(REQ, own=folder / "mine.jsonl")
    assert found.task_id == "t_old" and found.origin == "old.jsonl"
    assert histories.find_reusable(REQ, own=folder / "old.jsonl") is None  # its own history is not "another"
    assert FolderHistories(tmp_path / "elsewhere").find_reusable(REQ) is None
    assert folder_histories(folder) is folder_histories(folder)
    assert origin_label("quickstart.jsonl") == "quickstart.ipynb's history"


def test_the_keys_cache_follows_appends_and_replacements(tmp_path, monkeypatch):
    import imagen4_jupyter.records.folder as F

    monkeypatch.setattr(F, "SAVE_EVERY", 1)  # write the cache after every scan
    folder = tmp_path / ".imagen4"
    other = History(folder / "other.jsonl")
    for i in range(30):
        write_task(other, f"t{i}", REQ.replace(seed=str(i)), image=i < 29)
    own = folder / "mine.jsonl"
    assert FolderHistories(folder).find_reusable(REQ.replace(seed="3"), own=own).task_id == "t3"
    cache = folder / "other.jsonl.keys"
    state = json.loads(cache.read_text())
    assert state["offset"] == (folder / "other.jsonl").stat().st_size and len(state["keys"]) == 30 * 32
    assert state["keys"] == "".join(sorted(REQ.replace(seed=str(i)).key() for i in range(30)))

    # a fresh process starts from the cache, and reads only what was appended since
    write_task(other, "t_late", REQ.replace(seed="late"))
    fresh = FolderHistories(folder)
    assert fresh.find_reusable(REQ.replace(seed="late"), own=own).task_id == "t_late"
    assert fresh.find_reusable(REQ.replace(seed="29"), own=own) is None  # its image file is missing
    assert fresh.find_reusable(REQ.replace(seed="nope"), own=own) is None

    # which tasks the simulator made is kept in the cache too
    write_task(other, "t_sim", REQ.replace(seed="sim"), simulated=True)
    assert FolderHistories(folder).find_reusable(REQ.replace(seed="sim"), own=own, simulated=False) is None
    cached = FolderHistories(folder)
    assert cached.find_reusable(REQ.replace(seed="sim"), own=own, simulated=True).task_id == "t_sim"
    assert cached.is_simulated("other.jsonl", "t_sim") and not cached.is_simulated("other.jsonl", "t3")
    assert "t_sim" in json.loads(cache.read_text())["simulated"]

    # replaced by another log of the same length: the cache no longer matches and is not used
    text = (folder / "other.jsonl").read_text().replace('"t3"', '"u3"')
    (folder / "other.jsonl").write_text(text)
    assert FolderHistories(folder).find_reusable(REQ.replace(seed="3"), own=own).task_id == "u3"
    # a damaged cache is only a cache
    cache.write_text("{not json")
    assert FolderHistories(folder).find_reusable(REQ.replace(seed="3"), own=own).task_id == "u3"


def test_a_prompt_that_looks_like_an_event_fakes_nothing(tmp_path):
    folder = tmp_path / ".imagen4"
    tricky = GenerationRequest.create('x","event":"succeeded","task_id":"fake","request_key":"' + REQ.key(),
                                      seed="1")
    h = History(folder / "a.jsonl")
    h.append({"event": "submitted", "task_id": "t1", "request": tricky.to_dict(), "request_key": tricky.key()})
    assert FolderHistories(folder).find_reusable(REQ, own=folder / "b.jsonl") is None
    keys = FolderHistories(folder)
    keys.find_reusable(REQ, own=folder / "b.jsonl")
    assert not keys._keys["a.jsonl"].has(REQ.key()) and keys._keys["a.jsonl"].has(tricky.key()) is False
    assert keys._keys["a.jsonl"].pending == {"t1": tricky.key()}


# -- a real kernel: run a notebook, duplicate it, run the copy ----------------------------------------------
CELLS = [
    "%%imagen4 -s 42\nA watercolor lighthouse on a rocky coast at dawn",
    "%%imagen4 -a 16:9 -n 2 -s 7 -o job\nA cozy reading nook by a large window, rain on the glass",
    "%imagen4 history",
]


def run_notebook(path: Path, monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def image_data(nb) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for c in nb.cells for o in c.get("outputs", [])
            if "image/png" in (o.get("data") or {})]


@pytest.mark.kernel
def test_a_duplicated_notebook_runs_headless_with_no_createtask(sim, tmp_path, monkeypatch):
    ipdir = tmp_path / "ipython"
    (ipdir / "profile_default").mkdir(parents=True)
    (ipdir / "profile_default" / "ipython_kernel_config.py").write_text(
        'c.InteractiveShellApp.exec_lines = ["%load_ext imagen4_jupyter", '
        '"%config Imagen4Magics.poll_interval = 0.05"]\n')
    monkeypatch.setenv("IPYTHONDIR", str(ipdir))
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)
    monkeypatch.setenv("APIKLEY_API_KEY", sim.api_keys[0])
    folder = tmp_path / "project"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbformat.write(nb, folder / "study.ipynb")

    first = run_notebook(folder / "study.ipynb", monkeypatch)
    created = sim.count("createTask")
    assert created == 2 and len(image_data(first)) == 3

    shutil.copy(folder / "study.ipynb", folder / "study-Copy1.ipynb")  # File > Duplicate: the unrun source
    copy = run_notebook(folder / "study-Copy1.ipynb", monkeypatch)
    assert sim.count("createTask") == created  # nothing sent, nothing paid
    assert image_data(copy) == image_data(first)  # byte-identical images
    text = json.dumps([o for c in copy.cells for o in c.get("outputs", [])])
    assert text.count("from study.ipynb's history") == 2
    events = [json.loads(line) for line in (folder / ".imagen4" / "study-Copy1.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["reused", "reused"]
    assert all(e["from"] == "study.jsonl" for e in events)
    history_out = json.dumps(copy.cells[2].outputs)  # `%imagen4 history` in the copy lists both tasks
    assert all(e["task_id"] in history_out for e in events)
