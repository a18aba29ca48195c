"""Datasets others can load, from tasks made on the simulator over real sockets: the imagefolder layout that the
Hugging Face `datasets` library loads (offline), one Parquet file pandas reads, files byte-identical to the stored
originals but for the provenance chunks, simulated images only when asked for; and `history_frame()` equal to the
CSV export, row for row."""
from __future__ import annotations

import hashlib
import json
import struct

import pandas as pd
import pytest
from conftest import KEY
from conftest import session_on as make_session

from imagen4_jupyter import (
    InvalidRequestError,
    export_dataset,
    export_history,
    generate_many,
    grid,
    history_frame,
    read_provenance,
)
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

PNG = b"\x89PNG\r\n\x1a\n"



def without_provenance(data: bytes) -> bytes:
    """A PNG with our iTXt chunks (imagen4, Description) taken out, every other byte as it was."""
    assert data.startswith(PNG)
    pos, out = len(PNG), [PNG]
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos:pos + 12 + length]
        keyword = data[pos + 8:pos + 8 + length].split(b"\x00", 1)[0]
        if not (kind == b"iTXt" and keyword in (b"imagen4", b"Description")):
            out.append(chunk)
        pos += 12 + length
    return b"".join(out)


@pytest.fixture
def made(sim, tmp_path):
    """One history: a model x placeholder grid on a service that looks real, then a small batch on a simulator
    that announces itself (simulated tasks)."""
    folder = tmp_path / ".imagen4"
    real = make_session(sim, folder)
    g = grid("a {animal} in the snow", x={"model": ["fast", "standard"]}, y={"animal": ["fox", "owl"]}, seed=5,
             session=real, cell_size=32, progress=False)
    real.close()
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.02, 0.04), image_scale=0.0625,
                   enforce_limits=False) as announced:
        fake = make_session(announced, folder)
        batch = generate_many(["a simulated heron", "a simulated crane"], seed=1, session=fake, progress=False)
        fake.close()
    assert all(it.state == "success" for row in g.cells for it in row)
    assert batch.ok
    return {"grid": g, "batch": batch, "history": History(folder / "history.jsonl"), "store": folder / "images"}


def check_files(rows, folder, store, *, simulated_ok: bool):
    for row in rows:
        data = (folder / row["file_name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        original = (store / f"{row['source_sha256']}.png").read_bytes()  # the store names a file by its hash
        assert hashlib.sha256(original).hexdigest() == row["source_sha256"] != row["sha256"]
        assert without_provenance(data) == original  # pixels never re-encoded: only our chunks differ
        info = read_provenance(folder / row["file_name"])
        assert info["task_id"] == row["task_id"] and info["sha256"] == row["source_sha256"]
        assert row["simulated"] is False or simulated_ok


def test_imagefolder_export_loads_with_datasets_offline(made, tmp_path, monkeypatch):
    out = export_dataset(made["history"], tmp_path / "ds")
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    # the grid's four images, not the two simulated ones
    assert len(rows) == 4 and not any(r["simulated"] for r in rows)
    assert {r["task_id"] for r in rows} == {t for row in made["grid"].task_ids for t in row}
    assert {r["model"] for r in rows} == {"google/imagen4-fast", "google/imagen4"}
    assert all(r["seed"] == "5" and r["credits"] > 0 and r["created_at"] for r in rows)
    check_files(rows, out, made["store"], simulated_ok=False)
    card = (out / "README.md").read_text()
    assert card.startswith("# Imagen 4 images: 4 generated images") and "| fast | 2 |" in card
    assert "2 simulated image(s) were left out" in card and "load_dataset('imagefolder'" in card

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    from datasets import load_dataset

    ds = load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf" / "cache"))
    assert len(ds) == 4
    assert {"image", "prompt", "model", "task_id", "seed", "sha256", "source_sha256", "credits", "created_at",
            "simulated"} <= set(ds.column_names)
    by_task = {r["task_id"]: r for r in rows}
    for example in ds:
        row = by_task[example["task_id"]]
        assert example["prompt"] == row["prompt"] and example["sha256"] == row["sha256"]
        assert example["image"].size == (row["width"], row["height"])


def test_simulated_images_only_when_asked_and_the_card_says_so_first(made, tmp_path):
    # the simulated batch alone: refused in one line that says what to pass; nothing written
    with pytest.raises(InvalidRequestError, match="all 2 images were made by a simulator; pass include_simulated"):
        export_dataset(made["batch"], tmp_path / "sim-only", session=Session(history=made["history"]))
    assert not (tmp_path / "sim-only").exists()
    with pytest.raises(InvalidRequestError, match="no stored images match"):
        export_dataset(made["history"], tmp_path / "old", since="2000-01-01", until="2000-01-02")
    out = export_dataset(made["history"], tmp_path / "all", include_simulated=True)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and sum(r["simulated"] for r in rows) == 2
    assert (out / "README.md").read_text().splitlines()[0].startswith("# SIMULATED: 2 of these 6 images")
    check_files(rows, out, made["store"], simulated_ok=True)
    with pytest.raises(InvalidRequestError, match="not empty"):
        export_dataset(made["history"], out, include_simulated=True)
    # filters: one model
    fast = export_dataset(made["history"], tmp_path / "fast", model="fast")
    assert [json.loads(x)["model"] for x in (fast / "metadata.jsonl").read_text().splitlines()] == [
        "google/imagen4-fast"] * 2


def test_a_grid_exports_with_its_placeholder_column_and_parquet_reads_back(made, tmp_path):
    g = made["grid"]
    out = export_dataset(g, tmp_path / "grid-ds", session=Session(history=made["history"]))
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted((r["animal"], r["model"]) for r in rows) == sorted(
        (a, m) for a in ("fox", "owl") for m in ("google/imagen4-fast", "google/imagen4"))
    assert "`a {animal} in the snow`" in (out / "README.md").read_text()

    path = export_dataset(made["history"], tmp_path / "ds.parquet", format="parquet", include_simulated=True)
    frame = pd.read_parquet(path)
    assert len(frame) == 6 and frame["simulated"].sum() == 2
    for _, row in frame.iterrows():
        data = row["image"]["bytes"]
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert (made["store"] / f"{row['source_sha256']}.png").is_file()
        assert without_provenance(data) == (made["store"] / f"{row['source_sha256']}.png").read_bytes()
    import pyarrow.parquet as pq

    assert pq.read_schema(path).metadata[b"dataset_card"].decode().startswith("# SIMULATED: 2 of these 6")


def test_history_frame_equals_the_csv_export_row_for_row(made, tmp_path):
    csv_path = export_history(made["history"], tmp_path / "history.csv", absolute_paths=True)
    csv = pd.read_csv(csv_path, keep_default_na=False, dtype=str)
    frame = history_frame(made["history"])
    assert list(frame.columns) == list(csv.columns) and len(frame) == len(csv) == 6
    for (_, a), (_, b) in zip(frame.iterrows(), csv.iterrows(), strict=True):
        for column in csv.columns:
            mine, theirs = a[column], b[column]
            if column in ("time", "finished"):
                assert mine == pd.Timestamp(theirs), column
            elif isinstance(mine, list):
                assert ";".join(map(str, mine)) == theirs, column
            else:
                assert ("" if mine is None or (isinstance(mine, float) and pd.isna(mine)) else str(mine)) == theirs, (
                    column, mine, theirs)
