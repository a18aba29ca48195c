"""History export to CSV and JSON from a real history written by a session against the simulator."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from conftest import FAST_POLL, FAST_RETRY, KEY

from imagen4_jupyter import GenerationRequest, Imagen4Client, OutcomeUnknownError, export_history, generate_many
from imagen4_jupyter.records.export import COLUMNS
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session

TRICKY = 'Ein "Fuchs", im Schnee;\nzweite Zeile — ünïcödé, {braces}'


@pytest.fixture
def history(sim, tmp_path):
    """A history with a seeded success, a failure, an unknown outcome and two batch tasks."""
    client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=FAST_POLL, retry=FAST_RETRY,
                           cache_dir=tmp_path / "nb" / ".imagen4" / "images")
    session = Session(client=client, history=History(tmp_path / "nb" / ".imagen4" / "nb.jsonl"))
    try:
        session.submit(GenerationRequest.create(TRICKY, seed=42, aspect_ratio="16:9", num_images=2,
                                                negative_prompt="blur")).wait(10)
        sim.next_outcomes.append({"fail": ("400", "the prompt was filtered")})
        with pytest.raises(Exception, match="filtered"):
            session.submit(GenerationRequest.create("bad prompt")).wait(10)
        sim.inject("createTask", times=1, drop_after=True)
        with pytest.raises(OutcomeUnknownError):
            session.submit(GenerationRequest.create("lost in transit"), queue=False)
        assert generate_many(["b1", "b2"], session=session, progress=False).ok
    finally:
        session.close()
    return session.history


def test_csv_export_has_one_row_per_task_with_provenance(history, sim, tmp_path):
    out = export_history(history, tmp_path / "nb" / "tasks.csv")
    text = out.read_text(encoding="utf-8")
    assert KEY not in text and "Bearer" not in text
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [r["state"] for r in rows] == ["success", "fail", "outcome-unknown", "success", "success"]
    first = rows[0]
    assert first["prompt"] == TRICKY  # quotes, separators, newline and unicode survive
    assert (first["seed"], first["aspect_ratio"], first["num_images"], first["negative_prompt"]) == (
        "42", "16:9", "2", "blur")
    assert first["task_id"].startswith("task_")
    assert int(first["cost_time_ms"]) == int(sim.task(first["task_id"]).total_duration * 1000) > 0  # its costTime
    assert first["time"][:2] == "20" and "T" in first["time"]
    paths, digests = first["image_paths"].split(";"), first["sha256s"].split(";")
    assert len(paths) == 2 and len(digests) == 2
    for rel, digest in zip(paths, digests, strict=True):
        assert not Path(rel).is_absolute() and rel.startswith(".imagen4/images/")
        assert hashlib.sha256((out.parent / rel).read_bytes()).hexdigest() == digest
    assert "filtered" in rows[1]["error"] and rows[1]["image_paths"] == ""
    assert rows[2]["task_id"] == "" and "NOT resent" in rows[2]["error"] and rows[2]["prompt"] == "lost in transit"
    assert rows[3]["source"] == rows[4]["source"] == "batch"
    assert sorted(r["batch"][-2:] for r in rows[3:]) == ["#0", "#1"]  # batch id and index


def test_json_export_keeps_lists_and_types(history, tmp_path):
    out = export_history(history, tmp_path / "elsewhere" / "tasks.json", absolute_paths=True)
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert len(rows) == 5 and set(rows[0]) == set(COLUMNS)
    first = rows[0]
    assert first["num_images"] == 2 and isinstance(first["image_paths"], list) and len(first["sha256s"]) == 2
    assert all(Path(p).is_absolute() and Path(p).exists() for p in first["image_paths"])
    assert rows[2]["task_id"] is None and rows[2]["state"] == "outcome-unknown"
    assert KEY not in out.read_text(encoding="utf-8")


def test_export_from_a_path_and_from_a_session(history, tmp_path):
    from_path = export_history(str(history.path), tmp_path / "a.json")
    assert len(json.loads(from_path.read_text())) == 5
    session = Session(history=history, client=Imagen4Client(api_key=KEY, base_url="http://127.0.0.1:9",
                                                             cache_dir=tmp_path / "c"))
    assert len(json.loads(export_history(session, tmp_path / "b.json").read_text())) == 5


def test_bad_target_says_what_to_do_and_writes_nothing(history, tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        export_history(history, tmp_path / "tasks.xlsx")
    with pytest.raises(FileNotFoundError, match="No history file"):
        export_history(tmp_path / "missing.jsonl", tmp_path / "t.csv")
    assert not list(tmp_path.glob("tasks*")) and not (tmp_path / "t.csv").exists()
    out = export_history(history, tmp_path / "tasks.txt", format="csv")
    assert out.read_text().startswith("time,task_id,model,prompt")


def test_export_can_copy_images_with_their_provenance_inside(history, tmp_path):
    from imagen4_jupyter.api.provenance import read_provenance

    out = tmp_path / "paper"
    path = export_history(history, out / "tasks.json", copy_images_to=out / "images")
    rows = json.loads(path.read_text(encoding="utf-8"))
    with_images = [r for r in rows if r["image_paths"]]
    assert len(with_images) == 3 and sum(len(r["image_paths"]) for r in with_images) == 4
    copies = sorted((out / "images").iterdir())
    assert len(copies) == 4
    for row in with_images:
        entry = history.get(row["task_id"])
        for rel, sha, stored in zip(row["image_paths"], row["sha256s"], entry.images, strict=True):
            copy = out / rel  # the table names the copies, relative to it
            assert copy.parent == out / "images" and copy.name.startswith(row["task_id"])
            info = read_provenance(copy)
            assert info["task_id"] == row["task_id"] and info["sha256"] == sha == stored["sha256"]
            assert info["request"] == entry.request and info["model"] == "google/imagen4"
            assert info["index"] == stored["index"]
            original = history.resolve(stored["path"]).read_bytes()
            assert hashlib.sha256(original).hexdigest() == sha  # the store is untouched
            assert copy.read_bytes() != original
    assert read_provenance(copies[0])["request"]["prompt"] in (TRICKY, "b1", "b2")
    assert KEY not in "".join(p.read_bytes().decode("latin-1") for p in copies)
    # without the option nothing is copied and the paths are the store's
    plain = json.loads(export_history(history, tmp_path / "plain.json").read_text(encoding="utf-8"))
    assert all(".imagen4" in p for r in plain for p in r["image_paths"])
