"""An instant `%load_ext`: the client, requests, Pillow, ipywidgets and the history's parsing load on first use;
so do the cell views, outputs, cards, the request's validation and the subcommands, and the magic's argparse
parsers and help are built on first use (`%imagen4?`, `--help`, the first cell), with the same text.

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
         "imagen4_jupyter.notebook.panel", "imagen4_jupyter.records.session",  # the session: with the first cell
         # the magic's own front-end: with the first cell or subcommand (or the help, for the subcommands)
         "imagen4_jupyter.notebook.cellview", "imagen4_jupyter.notebook.outputs", "imagen4_jupyter.api.cards",
         "imagen4_jupyter.api.request", "imagen4_jupyter.notebook.cell_request", "imagen4_jupyter.api.store",
         "imagen4_jupyter.notebook.subcommands", "imagen4_jupyter.records.history",  # not imported: not parsed
         "IPython.core.magic_arguments", "difflib", "hashlib")
# api/models.py is not in HEAVY: the magic's traits name its aspect ratios and most images at %load_ext, and
# importing it then costs about 1.4 ms (its ModelSpec dataclass) of a %load_ext of 35-50 ms on this machine
CHILD = r"""
import sys, json, io, contextlib, argparse
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
parsers = []  # the progs of the argparse parsers built from here on
real_init = argparse.ArgumentParser.__init__
def counting_init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    parsers.append(self.prog)
argparse.ArgumentParser.__init__ = counting_init
if sys.argv[1] == "load":
    with contextlib.redirect_stdout(io.StringIO()) as said:
        ip.run_line_magic("load_ext", "imagen4_jupyter")
    print("RESULT " + json.dumps({"modules": [m for m in HEAVY if m in sys.modules], "said": said.getvalue(),
                                  "parsers": parsers}))
elif sys.argv[1] == "help":
    with contextlib.redirect_stdout(io.StringIO()):
        ip.run_line_magic("load_ext", "imagen4_jupyter")
    built_at_load = list(parsers)
    with contextlib.redirect_stdout(io.StringIO()) as helped:
        ip.run_line_magic("imagen4", "--help")
        ip.run_line_magic("imagen4", "--help")  # built once: the second one builds nothing
    built_for_help = parsers[len(built_at_load):]
    from IPython.core.magic_arguments import ArgDecorator, kwds, magic_arguments
    from imagen4_jupyter.notebook import magics as M
    from imagen4_jupyter.notebook.options import add_cell_flags, shared_flags
    class cell_flags(ArgDecorator):
        def add_to_parser(self, parser, group):
            shared_flags(add_cell_flags).add_to_parser(parser, group)
    def imagen4(self, line, cell=None):
        pass
    imagen4.__doc__ = M.Imagen4Magics.imagen4.__wrapped__.__doc__
    # what IPython's own decorators build at class creation, as the magic did before its help was lazy
    eager = magic_arguments(name="%imagen4")(kwds(epilog=M.help_epilog())(cell_flags()(imagen4)))
    method = ip.find_cell_magic("imagen4")
    print("RESULT " + json.dumps({"built_at_load": built_at_load, "help": helped.getvalue(), "eager": eager.__doc__,
                                  "doc": method.__doc__, "line_doc": ip.find_line_magic("imagen4").__doc__,
                                  "inspected": ip.object_inspect("%imagen4")["docstring"],
                                  "magic_docs": ip.magics_manager.lsmagic_docs()["cell"]["imagen4"],
                                  "type": type(method).__name__, "parsers": built_for_help,
                                  "usage": M.Imagen4Magics.imagen4.parser.format_usage()}))
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
        assert out["modules"] == [], out  # records.history among them: no history parsed either
        assert [p for p in out["parsers"] if "imagen4" in p] == [], out["parsers"]  # no parser, no help built
        assert f"{expected} unfinished task(s) — run %imagen4 resume" in out["said"]
        assert "load-speed-key" not in out["said"]


def test_the_help_is_built_on_first_use_with_the_text_ipythons_decorators_build(tmp_path):
    (tmp_path / ".ipython").mkdir()
    _, out = child("help", tmp_path, tmp_path / "pyc")
    assert [p for p in out["built_at_load"] if "imagen4" in p] == []
    assert out["parsers"].count("%imagen4") == 2 and "%imagen4 batch" in out["parsers"]  # built on --help, once
    doc = out["eager"]
    assert doc.startswith("::\n\n  %%imagen4 [-m MODEL]") and "Line magic -- %imagen4 <subcommand>:" in doc
    assert "Defaults: %config Imagen4Magics" in doc and "--embed <{preview,full,none}>" in doc
    assert out["help"] == 2 * (doc + "\n")  # `%imagen4 --help` prints it
    assert out["doc"] == out["line_doc"] == doc and out["magic_docs"] == doc.rstrip()  # help(), %magic
    import inspect

    assert out["inspected"] == inspect.cleandoc(doc)  # `%imagen4?` and Jupyter's inspector
    assert out["type"] == "method" and doc.startswith(out["usage"])  # the parser the cells use is that one


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


def test_unloading_before_any_cell_leaves_nothing_behind(tmp_path, monkeypatch):
    """The cell views are made with the first cell; an extension loaded and unloaded without one still leaves
    neither its magic nor its configurable (`%config Imagen4Magics` would see two after a reload)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from imagen4_jupyter.notebook import magics as M

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shell = InteractiveShell.instance()
    with capture_output():
        magics = M.load(shell)
    assert magics in shell.configurables and magics.made_views is None and magics.made_commands is None
    M.unload(shell)
    assert magics not in shell.configurables and shell.find_line_magic("imagen4") is None
    assert magics.made_views is None
