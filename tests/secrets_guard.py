"""The API-key check of the whole test run, wherever the tests sort: a pytest plugin (conftest.py loads it).

After the last test's teardown — session fixtures included, so kernels and logs are closed — it searches
everything this run produced for the API keys the tests hand out: every file under this run's pytest base
temp folder (history files, images, executed notebooks, kernel outputs, IPython dirs of the test kernels),
`test-artifacts/` (figures, the run's DEBUG log of the package and urllib3), the in-process IPython history
if this run wrote it, and the text and repr of every exception, job and output the reliability tests kept
(`reliability_util.SEEN`). Keys are looked for as they are, UTF-16, and inside base64 at every alignment (an
embedded output). A hit fails the run: an error in the last test's teardown that names the files (never the
key), or, when the run stopped early (`-x`), a failed exit status. `test-artifacts/secrets.json` says what
was searched and found.

Keys: `watch(key)` adds one (test modules call it for the keys they use, so a run searches the keys of the
tests it ran), and a key in the environment's `APIKLEY_API_KEY` (12 characters or more) is searched too.
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from reliability_util import ARTIFACTS, KERNEL_KEY, SEEN, write_figures

_WATCHED: list[str] = [KERNEL_KEY]
_RUN: dict[str, object] = {}  # "basetemp": this run's pytest base temp folder, "checked": the check ran


def watch(key: str) -> str:
    """Search the run's artifacts for `key` too; returns it (``KEY = watch("...")``)."""
    if len(key) < 12:
        raise ValueError("watch() needs a key of 12 characters or more (a shorter one matches by chance)")
    if key not in _WATCHED:
        _WATCHED.append(key)
    return key


def keys() -> list[str]:
    """The keys this run searches for."""
    found = list(_WATCHED)
    env_key = os.environ.get("APIKLEY_API_KEY", "")
    if len(env_key) >= 12 and env_key not in found:
        found.append(env_key)
    return found


class KeyLeak(AssertionError):
    """An API key was found in what the test run produced."""


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


@dataclass
class Report:
    """What one search looked at and found (hits name the file or the kept text, never the key)."""

    keys: int
    files: int
    size: int
    texts: int
    file_hits: list[str] = field(default_factory=list)
    text_hits: list[int] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        return bool(self.file_hits or self.text_hits)

    def message(self) -> str:
        shown = self.file_hits[:20] + [f"kept text #{n}" for n in self.text_hits[:20]]
        return (f"an API key was found in {len(self.file_hits)} file(s) and {len(self.text_hits)} kept text(s) of "
                f"this test run: " + "; ".join(shown))


def scan(roots: list[Path], texts: list[str], searched: list[str]) -> Report:
    """Search the files under `roots` and the `texts` for the `searched` keys."""
    hits, files, size = scan_files(roots, searched)
    return Report(len(searched), files, size, len(texts), hits, scan_texts(texts, searched))


def run_roots(basetemp: Path | None) -> list[Path]:
    """What this run may have written: its base temp folder, test-artifacts/, the IPython history it wrote."""
    roots = [ARTIFACTS] if basetemp is None else [basetemp, ARTIFACTS]
    from IPython.paths import get_ipython_dir

    ip_history = Path(get_ipython_dir()) / "profile_default" / "history.sqlite"
    started = _RUN.get("started")
    if ip_history.exists() and isinstance(started, float) and ip_history.stat().st_mtime >= started:
        roots.append(ip_history)
    return roots


def check_run() -> Report:
    """The end-of-run check (once): writes test-artifacts/secrets.json, raises KeyLeak on any hit."""
    _RUN["checked"] = True
    basetemp = _RUN.get("basetemp")
    report = scan(run_roots(basetemp if isinstance(basetemp, Path) else None), SEEN, keys())
    write_figures("secrets", {"keys_searched": report.keys, "files_scanned": report.files,
                              "bytes_scanned": report.size, "texts_scanned": report.texts,
                              "file_hits": len(report.file_hits), "text_hits": len(report.text_hits)})
    if report.leaked:
        raise KeyLeak(report.message())
    return report


# -- the plugin -------------------------------------------------------------------------------------------
def pytest_sessionstart(session: pytest.Session) -> None:
    import time

    _RUN.clear()
    _RUN["started"] = time.time() - 5


@pytest.fixture(scope="session", autouse=True)
def _secrets_guard_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Note this run's base temp folder for the end-of-run check."""
    _RUN["basetemp"] = tmp_path_factory.getbasetemp()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After pytest's own teardown of the last test (which tears down the session fixtures too)."""
    if nextitem is None and not _RUN.get("checked"):
        check_run()  # a KeyLeak here is an error in the last test's teardown: the run fails, saying where


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run stopped before its last test (-x, Ctrl-C) or the last teardown failed: check now."""
    if _RUN.get("checked") or "basetemp" not in _RUN:
        return
    try:
        check_run()
    except KeyLeak as leak:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"secrets_guard: {leak}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
