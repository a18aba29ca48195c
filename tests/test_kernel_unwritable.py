"""Nothing is sent whose record could not be written, in a real kernel, on real failing file systems: a history
folder mounted read-only, a history file mounted read-only, and a tmpfs that is full. Each time the cell says so
in one short line, the service sees no createTask, and the history keeps no torn line.

The mounts need root (CI runs as root); elsewhere these tests are skipped, and say why.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import KEY
from kernel_util import FAST_CONFIG, Kernel, kernel_env

from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=10)


@contextmanager
def mounted(*args: str, target: Path) -> Iterator[Path]:
    """Mount (or skip the test where mounting is not allowed), and always unmount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only or full file system needs root")
    try:
        _mount(*args)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        pytest.skip(f"cannot mount here: {err}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=10)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` (a folder or a file) bind-mounted read-only onto itself: even root cannot write it."""
    with mounted("--bind", str(path), str(path), target=path):
        _mount("-o", "remount,bind,ro", str(path))
        yield path


@pytest.fixture
def sim():
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.05, 0.1), image_scale=0.0625,
                   enforce_limits=False) as s:
        yield s


def run_cell(tmp_path: Path, sim, folder: Path, seed: int) -> tuple[str, list[dict]]:
    """A seeded cell with its history in `folder`: what it showed, and its messages."""
    k = Kernel(tmp_path, kernel_env(sim.url, KEY, tmp_path / "ipython"))
    try:
        assert k.execute(f"%load_ext imagen4_jupyter\n{FAST_CONFIG}\n"
                         f"%config Imagen4Magics.history_folder = {str(folder)!r}\n"
                         "%config Imagen4Magics.notebook = 'ro.ipynb'").ok
        out = k.execute(f"%%imagen4 --wait -s {seed}\na request that cannot be recorded")
        return out.text(), out.messages
    finally:
        k.close()


def assert_refused_in_one_line(text: str, messages: list[dict], folder: Path) -> None:
    said = [line for line in text.splitlines() if "Not sent" in line]
    assert len(said) == 1 and str(folder) in said[0] and "nothing is sent without its record" in said[0], text
    assert "Traceback" not in text and "OSError" not in text and len(said[0]) < 400
    tracebacks = [m for m in messages if m["msg_type"] == "error"]
    assert all(len(m["content"]["traceback"]) <= 2 for m in tracebacks)  # a short error, not a wall


def test_a_read_only_history_folder_sends_nothing(tmp_path, sim):
    folder = tmp_path / "history"
    folder.mkdir()
    with read_only(folder):
        text, messages = run_cell(tmp_path, sim, folder, 1)
        assert list(folder.iterdir()) == []
    assert_refused_in_one_line(text, messages, folder)
    assert sim.count("createTask") == 0 and sim.count() <= 1  # at most the price probe's balance read


def test_a_read_only_history_file_sends_nothing(tmp_path, sim):
    folder = tmp_path / "history"
    folder.mkdir()
    log = folder / "ro.jsonl"
    log.write_text('{"v":1,"event":"credits","credits":5}\n')
    before = log.read_bytes()
    with read_only(log):
        text, messages = run_cell(tmp_path, sim, folder, 2)
    assert_refused_in_one_line(text, messages, folder)
    assert sim.count("createTask") == 0
    assert log.read_bytes() == before


def test_a_full_disk_sends_nothing_and_leaves_no_torn_line(tmp_path, sim):
    folder = tmp_path / "small"
    folder.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder), target=folder):
        log = folder / "ro.jsonl"
        line = json.dumps({"v": 1, "event": "credits", "credits": 5}) + "\n"
        log.write_text(line * (4000 // len(line)))  # the last page of the file has room for ~100 bytes only
        before = log.read_bytes()
        filler = folder / "filler"
        with open(filler, "wb", buffering=0) as fh:  # take every other page of the file system
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        text, messages = run_cell(tmp_path, sim, folder, 3)
        after = log.read_bytes()
    assert_refused_in_one_line(text, messages, folder)
    assert sim.count("createTask") == 0
    assert after == before  # a short write was undone: no torn line
    assert all(json.loads(raw) for raw in after.splitlines())
