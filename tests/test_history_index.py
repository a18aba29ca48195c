"""The history index: a snapshot of the folded history next to the log, so a fresh kernel does not re-parse
10,000 tasks; it is used only while it matches the log, and loading one never runs code."""
from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records import history as H
from imagen4_jupyter.records.history import History


@pytest.fixture(autouse=True)
def small_index(monkeypatch):
    monkeypatch.setattr(H, "INDEX_EVERY", 2000)


def fill(h: History, start: int, count: int) -> None:
    for i in range(start, start + count):
        req = GenerationRequest.create(f"prompt {i}", seed=str(i))
        tid = f"task_{i}"
        h.append({"event": "submitted", "task_id": tid, "request": req.to_dict(), "request_key": req.key()})
        if i % 3:
            h.append({"event": "succeeded", "task_id": tid, "urls": ["http://x/1.png"],
                      "images": [{"path": f"images/{i}.png", "sha256": "0" * 64, "mime": "image/png", "width": 8,
                                  "height": 8, "size": 10, "url": "http://x/1.png", "index": 0}],
                      "generating_since_ms": 1000, "complete_time_ms": 11000})


def state(h: History) -> tuple:
    return ({k: vars(v) for k, v in h.tasks.items()}, h.by_key, h.unknown, h.bad_lines)


def fresh_parse(path) -> History:
    h = History(path)
    h._load_index = lambda size: None  # the log alone
    h.refresh()
    return h


def test_a_fresh_history_starts_from_the_index_and_reads_only_what_came_after(tmp_path):
    path = tmp_path / "h.jsonl"
    writer = History(path)
    fill(writer, 0, 30)
    assert writer.index_path.exists() and 0 < writer._indexed <= path.stat().st_size
    fill(writer, 30, 2)  # appended after the last snapshot
    reader = History(path)
    reader.refresh()
    assert reader._indexed > 0  # it started from the index ...
    assert state(reader) == state(fresh_parse(path))  # ... and ends where a full parse ends
    assert reader.find_reusable(GenerationRequest.create("prompt 31", seed="31")) is None  # files absent
    assert [e.task_id for e in reader.unfinished()] == [f"task_{i}" for i in range(32) if i % 3 == 0]


def test_an_index_that_no_longer_matches_the_log_is_ignored(tmp_path):
    path = tmp_path / "h.jsonl"
    fill(History(path), 0, 30)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"prompt 1", b"PROMPT 1"))  # rewritten, same size
    h = History(path)
    h.refresh()
    assert h.tasks["task_1"].request["prompt"] == "PROMPT 1"
    assert state(h) == state(fresh_parse(path))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_format"])
def test_a_damaged_index_is_ignored(tmp_path, damage):
    path = tmp_path / "h.jsonl"
    fill(History(path), 0, 30)
    index = path.with_name(path.name + ".index")
    if damage == "truncated":
        index.write_bytes(index.read_bytes()[:100])
    elif damage == "garbage":
        index.write_bytes(os.urandom(5000))
    else:
        state_ = pickle.loads(index.read_bytes())
        state_["format"] = 999
        index.write_bytes(pickle.dumps(state_))
    h = History(path)
    h.refresh()
    assert state(h) == state(fresh_parse(path))


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loading_an_index_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "h.jsonl"
    fill(History(path), 0, 30)
    index = path.with_name(path.name + ".index")
    state_ = pickle.loads(index.read_bytes())
    state_["unknown"] = [Boom()]
    index.write_bytes(pickle.dumps(state_))
    h = History(path)
    h.refresh()
    assert not (tmp_path / "pwned").exists()
    assert state(h) == state(fresh_parse(path))


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """No new file in `folder`, even for root (who ignores the mode bits): then the immutable flag says no too."""
    os.chmod(folder, 0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder read-only here (root without chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_a_read_only_folder_still_reads(tmp_path):
    path = tmp_path / "ro" / "h.jsonl"
    fill(History(path), 0, 30)
    path.with_name(path.name + ".index").unlink()
    with read_only(path.parent):
        with pytest.raises(OSError):
            (path.parent / "probe").write_text("x")  # the folder really is read-only
        h = History(path)
        h.refresh()
        assert len(h.tasks) == 30 and not h.index_path.exists()


def test_history_thumbnails_are_cached_beside_store_files_only(tmp_path):
    from imagen4_jupyter.api.store import thumbnail
    from imagen4_jupyter.simulator.images import render_png

    png = render_png("thumb-test", (512, 512))
    store_file = tmp_path / "images" / (("ab" * 32) + ".png")
    store_file.parent.mkdir()
    store_file.write_bytes(png)
    data, mime = thumbnail(store_file)
    cached = store_file.parent / ".thumbs" / f"{store_file.stem}-72"
    assert mime == "image/jpeg" and cached.read_bytes() == data and len(data) < 10_000
    cached.write_bytes(b"\xff\xd8\xff cached")  # a second call reads the cache, no decode
    assert thumbnail(store_file) == (b"\xff\xd8\xff cached", "image/jpeg")
    os.utime(store_file, ns=(cached.stat().st_mtime_ns + 10**9,) * 2)  # the image is newer: made again
    assert thumbnail(store_file)[0] == data
    other = tmp_path / "elsewhere" / "photo.png"
    other.parent.mkdir()
    other.write_bytes(png)
    assert thumbnail(other)[1] == "image/jpeg" and not (other.parent / ".thumbs").exists()


def test_reused_entries_and_their_origin_survive_the_index(tmp_path):
    path = tmp_path / "h.jsonl"
    writer = History(path)
    fill(writer, 0, 10)
    req = GenerationRequest.create("from the original", seed="5")
    writer.append({"event": "reused", "task_id": "task_orig", "from": "study.jsonl", "request": req.to_dict(),
                   "request_key": req.key(), "images": [{"path": "images/x.png", "sha256": "1" * 64}],
                   "urls": [], "submitted_at": 100.0, "finished_at": 110.0, "cost_time_ms": 900})
    fill(writer, 10, 25)
    assert writer.index_path.exists()
    reader = History(path)
    reader.refresh()
    assert reader._indexed > path.stat().st_size // 2  # the reused entry came from the index
    entry = reader.get("task_orig")
    assert entry.origin == "study.jsonl" and entry.succeeded and reader.by_key[req.key()] == ["task_orig"]
    assert state(reader) == state(fresh_parse(path))
