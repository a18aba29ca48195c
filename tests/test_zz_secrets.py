"""Runs last (by its name): searches everything this test run produced for the API keys the tests use.

Searched: every file under this run's pytest base temp folder (history files, images, executed notebooks,
kernel outputs, IPython dirs of the test kernels), `test-artifacts/` (figures, the run's DEBUG log of the
package and urllib3), the in-process IPython history if this run wrote it, and the text and repr of every
exception, job and output the reliability tests kept (`reliability_util.SEEN`). Keys are looked for as
they are, UTF-16, and inside base64 at every alignment (an embedded output). Zero hits expected.
"""
from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from conftest import KEY
from reliability_util import ARTIFACTS, KERNEL_KEY, SEEN, write_figures


def needles(key: str) -> list[bytes]:
    raw = key.encode()
    found = [raw, key.encode("utf-16-le")]
    for pad in range(3):  # the key inside a base64 blob, whatever its offset
        enc = base64.b64encode(b"\0" * pad + raw)
        found.append(enc[4:-4])
    return found


def scan_files(roots: list[Path], keys: list[str]) -> tuple[list[str], int, int]:
    """(hits as 'path: which key', files scanned, bytes scanned)."""
    pats = [(i, n) for i, key in enumerate(keys) for n in needles(key)]
    hits, files, size = [], 0, 0
    for root in roots:
        if root.is_file():
            paths = [root]
        elif root.is_dir():
            paths = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        else:
            continue
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            files += 1
            size += len(data)
            for i, pat in pats:
                if pat in data:
                    hits.append(f"{path}: key #{i}")
                    break
    return hits, files, size


def scan_texts(texts: list[str], keys: list[str]) -> list[int]:
    return [n for n, text in enumerate(texts) if any(k in text for k in keys)]


def test_scanner_finds_a_planted_key():
    """The scanner itself works: plain, JSON, UTF-16, base64 in a notebook, SQLite, nested folders."""
    import json
    import sqlite3

    key = "sk-planted-key-7Gq2xZ"
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a" / "b").mkdir(parents=True)
        (root / "a" / "b" / "plain.log").write_text(f"header Authorization: Bearer {key}\n")
        (root / "nb.ipynb").write_text(json.dumps({"data": {"image/png": base64.b64encode(
            b"\x89PNG..." + key.encode() + b"...").decode()}}))
        (root / "w.txt").write_bytes(f"x{key}y".encode("utf-16-le"))
        con = sqlite3.connect(root / "h.sqlite")
        con.execute("create table t (x text)")
        con.execute("insert into t values (?)", (f"%env APIKLEY_API_KEY={key}",))
        con.commit()
        con.close()
        (root / "clean.txt").write_text("nothing here")
        hits, files, _ = scan_files([root], [key])
    assert files == 5 and len(hits) == 4 and not any("clean.txt" in h for h in hits)
    assert scan_texts(["ok", f"E: {key}"], [key]) == [1]


def test_no_api_key_in_any_artifact_of_this_run(tmp_path_factory):
    keys = [KEY, KERNEL_KEY]
    env_key = os.environ.get("APIKLEY_API_KEY", "")
    if len(env_key) >= 12:
        keys.append(env_key)
    base = tmp_path_factory.getbasetemp()
    started = base.stat().st_mtime - 3600
    roots = [base, ARTIFACTS]
    from IPython.paths import get_ipython_dir

    ip_history = Path(get_ipython_dir()) / "profile_default" / "history.sqlite"
    if ip_history.exists() and ip_history.stat().st_mtime >= started:
        roots.append(ip_history)
    hits, files, size = scan_files(roots, keys)
    text_hits = scan_texts(SEEN, keys)
    write_figures("secrets", {"keys_searched": len(keys), "files_scanned": files, "bytes_scanned": size,
                              "texts_scanned": len(SEEN), "file_hits": len(hits), "text_hits": len(text_hits)})
    assert files > 0
    assert hits == [] and text_hits == [], (hits, [SEEN[i][:200] for i in text_hits])
