"""An instant `%load_ext`: the client, requests, Pillow, ipywidgets and the history's parsing load on first use.

Measured in fresh processes (as a kernel starts), with byte-code caches in a temporary folder so both variants
read compiled modules, as an installed package does. The time it takes is a benchmark
(benchmarks/bench_load.py), not a test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from imagen4_jupyter.records.open_tasks import open_task_ids

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("requests", "urllib3", "PIL", "ipywidgets", "imagen4_jupyter.api.client", "imagen4_jupyter.api.poller",
         "imagen4_jupyter.notebook.panel", "imagen4_jupyter.records.session")  # the session: with the first cell
CHILD = r"""
import sys, json, io, contextlib
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
if sys.argv[1] == "time":
    with contextlib.redirect_stdout(io.StringIO()):
        ip.run_line_magic("load_ext", "imagen4_jupyter")
elif sys.argv[1] == "load":
    from imagen4_jupyter.records import history
    parsed = []
    real = history.History.refresh
    history.History.refresh = lambda self: (parsed.append(1), real(self))[1]
    with contextlib.redirect_stdout(io.StringIO()) as said:
        ip.run_line_magic("load_ext", "imagen4_jupyter")
    print("RESULT " + json.dumps({"modules": [m for m in HEAVY if m in sys.modules], "parsed": len(parsed),
                                  "said": said.getvalue()}))
""".replace("HEAVY", repr(HEAVY))


def child(mode: str, cwd: Path, pyc: Path) -> tuple[float, dict]:
    env = dict(os.environ, APIKLEY_BASE_URL="http://127.0.0.1:9", APIKLEY_API_KEY="load-speed-key",
               PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(pyc), IPYTHONDIR=str(cwd / ".ipython"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("JPY_SESSION_NAME", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    return wall, json.loads(line[0][7:]) if line else {}


def history_with_open_tasks(folder: Path, tasks: int, open_every: int) -> int:
    path = folder / ".imagen4" / "history.jsonl"
    path.parent.mkdir(parents=True)
    lines, still_open = [], 0
    for i in range(tasks):
        lines.append({"v": 1, "time": 1.0 + i, "event": "submitted", "task_id": f"task_{i}",
                      "request": {"prompt": f"p {i}", "num_images": 1, "aspect_ratio": "1:1"}})
        if i % open_every:
            lines.append({"v": 1, "time": 2.0 + i, "event": "succeeded", "task_id": f"task_{i}", "urls": [],
                          "images": []})
        else:
            still_open += 1
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return still_open


def test_load_ext_imports_no_client_requests_pillow_or_widgets_and_parses_no_history(tmp_path):
    (tmp_path / ".ipython").mkdir()
    expected = history_with_open_tasks(tmp_path, 2000, 50)
    pyc = tmp_path / "pyc"
    for _ in range(2):  # the second run reads the sidecar written by the first
        _, out = child("load", tmp_path, pyc)
        assert out["modules"] == [] and out["parsed"] == 0, out
        assert f"{expected} unfinished task(s) — run %imagen4 resume" in out["said"]
        assert "load-speed-key" not in out["said"]


def test_the_open_task_count_follows_the_log_incrementally(tmp_path):
    expected = history_with_open_tasks(tmp_path, 300, 10)
    log = tmp_path / ".imagen4" / "history.jsonl"
    assert len(open_task_ids(log)) == expected
    with open(log, "a") as fh:
        fh.write(json.dumps({"event": "failed", "task_id": "task_0", "final": True}) + "\n")
        fh.write(json.dumps({"event": "failed", "task_id": "task_10", "final": False}) + "\n")  # resumable
        fh.write('{"event": "succeeded", "task_id": "task_20"')  # a torn last line waits
    ids = open_task_ids(log)
    assert "task_0" not in ids and "task_10" in ids and "task_20" in ids and len(ids) == expected - 1
    from imagen4_jupyter.records.history import History

    assert sorted(e.task_id for e in History(log).unfinished()) == sorted(ids)
    log.write_text("")  # replaced
    assert open_task_ids(log) == []
