"""The end-of-run API-key check (tests/secrets_guard.py) finds a planted key, and fails a run wherever it sorts.

Keys are planted only in temporary folders outside this run's own temp folder (and removed), or this very
run's check would rightly fail.
"""
from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import secrets_guard as G
from conftest import KEY
from reliability_util import KERNEL_KEY

TESTS = Path(__file__).resolve().parent
PLANTED = "sk-planted-key-7Gq2xZ"


def test_scanner_finds_a_planted_key():
    """Plain, JSON, UTF-16, base64 in a notebook, SQLite, nested folders; a clean file is no hit."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "b" / "plain.log").write_text(f"header Authorization: Bearer {PLANTED}\n")
        (root / "nb.ipynb").write_text(json.dumps({"data": {"image/png": base64.b64encode(
            b"\x89PNG..." + PLANTED.encode() + b"...").decode()}}))
        (root / "w.txt").write_bytes(f"x{PLANTED}y".encode("utf-16-le"))
        con = sqlite3.connect(root / "h.sqlite")
        con.execute("create table t (x text)")
        con.execute("insert into t values (?)", (f"%env APIKLEY_API_KEY={PLANTED}",))
        con.commit()
        con.close()
        (root / "clean.txt").write_text("nothing here")
        hits, files, _ = G.scan_files([root], [PLANTED])
    assert files == 5 and len(hits) == 4 and not any("clean.txt" in h for h in hits)
    assert G.scan_texts(["ok", f"E: {PLANTED}"], [PLANTED]) == [1]


def test_the_run_searches_the_tests_keys():
    searched = G.keys()
    assert KEY in searched and KERNEL_KEY in searched
    with pytest.raises(ValueError):
        G.watch("short")


def test_a_key_planted_in_a_temp_artifact_is_a_leak():
    """The check the run ends with, on a planted history file and kept text: it fails, naming the file only."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / ".imagen4").mkdir()
        (root / ".imagen4" / "history.jsonl").write_text(json.dumps({"event": "submitted", "auth": KEY}) + "\n")
        (root / "clean.png").write_bytes(b"\x89PNG nothing")
        report = G.scan([root], ["fine", f"ImagenError(key={KEY!r})"], G.keys())
        assert report.leaked and report.files == 2
        assert report.file_hits == [f"{root / '.imagen4' / 'history.jsonl'}: key #{G.keys().index(KEY)}"]
        assert report.text_hits == [1]
        assert KEY not in report.message() and "history.jsonl" in report.message()
        (root / ".imagen4" / "history.jsonl").write_text("{}\n")
        clean = G.scan([root], ["fine"], G.keys())
    assert not clean.leaked and clean.files == 2


def _inner_run(tmp: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A pytest run of its own on `files`, with the guard plugin, everything in `tmp` (not this run's folders)."""
    for name, text in files.items():
        (tmp / name).write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if k not in ("APIKLEY_API_KEY", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent)]), IMAGEN4_TEST_ARTIFACTS=str(tmp / "art"),
               IPYTHONDIR=str(tmp / "ipython"))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "secrets_guard", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp / "bt"), "-q", *args, *files],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


LEAK = """
    from secrets_guard import watch

    KEY = watch("inner-planted-key-0123456789")

    def test_writes_the_key_into_a_history(tmp_path):
        (tmp_path / "history.jsonl").write_text('{"key": "%s"}' % KEY)
"""
CLEAN = """
    def test_later_and_clean(tmp_path):
        (tmp_path / "out.txt").write_text("no key")
"""
TEARDOWN_BREAKS = """
    import pytest

    @pytest.fixture(scope="session")
    def breaks():
        yield
        raise RuntimeError("a session fixture fails at teardown")

    def test_last(breaks):
        pass
"""


def test_a_run_that_writes_a_key_fails_wherever_the_leaking_test_sorts():
    """The leaking test sorts first, two clean ones after it: the run still fails, at its very end."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        leaky = _inner_run(tmp, {"test_a_leak.py": LEAK, "test_b_clean.py": CLEAN, "test_c_clean.py": CLEAN})
        out = leaky.stdout + leaky.stderr
        assert leaky.returncode == 1, out
        assert "3 passed, 1 error" in out and "KeyLeak" in out and "history.jsonl" in out, out
        assert "inner-planted-key" not in out  # names the file, never the key
        figures = json.loads((tmp / "art" / "secrets.json").read_text())
        assert figures["file_hits"] == 1 and figures["files_scanned"] >= 2


def test_a_run_whose_last_teardown_breaks_is_still_checked():
    """The last test's teardown fails before the check could run there: the run's end checks instead."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broken = _inner_run(tmp, {"test_a_leak.py": LEAK, "test_z_breaks.py": TEARDOWN_BREAKS})
        out = broken.stdout + broken.stderr
        assert broken.returncode == 1 and "secrets_guard: an API key was found in 1 file(s)" in out, out


def test_a_clean_run_passes():
    """The control: the same plugin on tests that write no key lets the run pass."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clean = _inner_run(tmp, {"test_b_clean.py": CLEAN, "test_c_clean.py": CLEAN})
        assert clean.returncode == 0 and "2 passed" in clean.stdout, clean.stdout + clean.stderr
        assert json.loads((tmp / "art" / "secrets.json").read_text())["file_hits"] == 0
