"""Run the quickstart notebook end to end on the built-in simulator: ``scripts/demo`` runs this file.

Tooling of the source checkout, not part of the package: it needs the checkout's ``notebooks/``.

Headless by default: starts a local :class:`~imagen4_jupyter.simulator.Simulator` (no API key needed),
points the kernel at it through ``APIKLEY_BASE_URL`` / ``APIKLEY_API_KEY``, executes the notebook with
nbclient in a fresh output folder, saves the executed notebook there (images and the ``.imagen4/``
history beside it) and prints a summary. ``--lab`` starts JupyterLab wired to a running simulator
instead; ``--real`` (with ``APIKLEY_API_KEY`` set) runs against the real service.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from demo_summary import history_task_ids, summarize

ROOT = Path(__file__).resolve().parent.parent  # the source checkout
DEFAULT_NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
DEMO_KEY = "demo-key-simulator"
MARKER = ".imagen4-demo.json"  # written into the output folder; says the folder is ours to refresh

# Realistic but short: the simulator's real-life durations at a quarter of the time (a standard task queues
# 0.25-1 s and generates 1.5-3 s), so the states change visibly, yet the whole notebook runs in well under a minute.
SIM_OPTIONS: dict[str, Any] = dict(time_scale=0.25, image_scale=0.5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Execute the quickstart notebook headlessly against the built-in Apikley simulator "
                    "(no API key needed) and write the result with its images.")
    p.add_argument("--out", default="demo-output", metavar="DIR",
                   help="output folder (default: demo-output); the executed notebook, its images and "
                        "the .imagen4/ history go there")
    p.add_argument("--notebook", default=None, metavar="PATH",
                   help=f"notebook to execute (default: {_display_path(DEFAULT_NOTEBOOK)})")
    p.add_argument("--keep", action="store_true",
                   help="keep the history of an earlier demo run in DIR, so seeded cells reuse its images "
                        "instead of creating new tasks (default: start fresh)")
    p.add_argument("--lab", action="store_true",
                   help="start JupyterLab on 127.0.0.1 wired to a running simulator, for interactive use")
    p.add_argument("--port", type=int, default=8888, help="JupyterLab port with --lab (default 8888, or a free one)")
    p.add_argument("--real", action="store_true",
                   help="use the real service (needs APIKLEY_API_KEY; optional APIKLEY_BASE_URL); costs credits")
    p.add_argument("--cell-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="give up on a cell after this long (default 900)")
    return p


# -- small helpers ------------------------------------------------------------------------------
def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _tree_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _jupyter_command() -> str:
    """How the user should call jupyter: plain `jupyter` if this venv is on PATH, else its full path."""
    exe = Path(sys.executable).parent / "jupyter"
    found = shutil.which("jupyter")
    if found and Path(found).resolve() == exe.resolve():
        return "jupyter"
    return _display_path(exe) if exe.exists() else "jupyter"


def _prepare_out(out: Path, notebook_name: str, keep: bool) -> None:
    """Create the output folder; refresh files an earlier demo run left there (unless --keep)."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    if marker.exists() and not keep:
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = {}
        for name in {notebook_name, previous.get("notebook") or notebook_name}:
            (out / name).unlink(missing_ok=True)
        for name in (".imagen4", "images"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    marker.write_text(json.dumps({"notebook": notebook_name, "time": time.time()}) + "\n")


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will; ignores TIME_WAIT
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def _resolve_notebook(arg: str | None) -> Path:
    path = Path(arg).expanduser() if arg else DEFAULT_NOTEBOOK
    if not path.is_file():
        hint = "" if arg else (" (the demo runs from a source checkout: git clone the project and run "
                               "./scripts/demo, or pass --notebook PATH)")
        raise SystemExit(f"demo: notebook not found: {path}{hint}")
    return path.resolve()


def _use_this_package() -> None:
    """Make kernels import the same imagen4_jupyter as this process, installed or not."""
    root = str(ROOT)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])


def _start_simulator():
    if str(ROOT) not in sys.path:  # run from the checkout without an install
        sys.path.insert(0, str(ROOT))
    from imagen4_jupyter.simulator import Simulator

    return Simulator(api_keys=(DEMO_KEY,), **SIM_OPTIONS).start()


# -- headless run --------------------------------------------------------------------------------
def run_headless(args: argparse.Namespace) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    src = _resolve_notebook(args.notebook)
    out = Path(args.out).expanduser().resolve()
    out_nb = out / src.name
    _prepare_out(out, src.name, args.keep)

    sim = None
    if args.real:
        where = os.environ.get("APIKLEY_BASE_URL") or "https://api.apikley.ru"
        _say(f"imagen4 demo: running {_display_path(src)} against the REAL service at {where} "
             "(this spends credits)")
    else:
        if os.environ.get("APIKLEY_API_KEY"):
            _say("imagen4 demo: APIKLEY_API_KEY is set but not used; pass --real to run against the real service.")
        sim = _start_simulator()
        os.environ["APIKLEY_BASE_URL"] = sim.url
        os.environ["APIKLEY_API_KEY"] = DEMO_KEY
        _say(f"imagen4 demo: running {_display_path(src)} against the built-in simulator at {sim.url}")
    # The kernel inherits this environment; JPY_SESSION_NAME tells the extension which notebook it is in,
    # so the history lands in <out>/.imagen4/ beside the executed notebook.
    os.environ["JPY_SESSION_NAME"] = str(out_nb)
    _use_this_package()

    nb = nbformat.read(src, as_version=4)
    kernel_name = (nb.metadata.get("kernelspec") or {}).get("name") or "python3"
    code_total = sum(1 for c in nb.cells if c.cell_type == "code")
    started: dict[int, float] = {}
    counter = {"n": 0}

    def on_start(cell, cell_index, **_):
        started[cell_index] = time.monotonic()

    def on_executed(cell, cell_index, **_):
        counter["n"] += 1
        first = (cell.source.strip().splitlines() or [""])[0]
        first = first if len(first) <= 60 else first[:57] + "..."
        took = time.monotonic() - started.get(cell_index, time.monotonic())
        _say(f"  [{counter['n']:>2}/{code_total}] {took:5.1f} s  {first}")

    client = NotebookClient(nb, timeout=args.cell_timeout, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(out)}},
                            on_cell_start=on_start, on_cell_executed=on_executed)
    t0 = time.monotonic()
    failure: str | None = None
    kernel_log = tempfile.TemporaryFile(mode="w+")  # the kernel's stderr: shown only when something fails
    try:
        client.execute(stderr=kernel_log)
    except CellExecutionError as exc:
        failure = str(exc).strip()
    except (CellTimeoutError, DeadKernelError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        elapsed = time.monotonic() - t0
        nbformat.write(nb, out_nb)
        create_count = sim.count("createTask") if sim is not None else None
        if sim is not None:
            sim.stop()

    s = summarize(nb)
    hist = out / ".imagen4"
    hist_ids = history_task_ids(hist) if hist.is_dir() else []
    task_ids = s["task_ids"] or hist_ids
    _say("")
    _say(f"{'FAILED' if failure else 'Done'}: {_display_path(src)} -> {_display_path(out_nb)} in {elapsed:.1f} s")
    _say(f"  cells run    : {s['ran']} of {s['code_cells']} code cells, {s['errors']} with errors")
    tasks = f" from {len(task_ids)} task{'s' if len(task_ids) != 1 else ''}" if task_ids else ""
    _say(f"  images       : {s['images']} image outputs, {s['tagged_images']} with imagen4 metadata{tasks}")
    for i in range(0, len(task_ids), 3):
        _say("                 " + ", ".join(task_ids[i:i + 3]))
    if create_count is not None:
        note = "  (seeded cells reused stored images)" if create_count < len(task_ids) else ""
        plural = "" if create_count == 1 else "s"
        _say(f"  createTask   : {create_count} request{plural} seen by the simulator{note}")
    _say(f"  notebook     : {_display_path(out_nb)} ({_size(out_nb.stat().st_size)})")
    if hist.is_dir():
        n, size = _tree_size(hist)
        logs = sorted(p.name for p in hist.glob("*.jsonl"))
        what = f"log {', '.join(logs)}" if logs else "no history log"
        _say(f"  history      : {_display_path(hist)}/ ({what}; {n} files, {_size(size)} with the images)")
    else:
        _say("  history      : none written (no .imagen4/ folder in the output)")
    if failure:
        _say("")
        _say(failure if len(failure) < 4000 else failure[:4000] + "\n...")
        kernel_log.seek(0)
        log = [ln for ln in kernel_log.read().splitlines() if "running over TCP without encryption" not in ln]
        if any(ln.strip() for ln in log):
            _say("kernel stderr (last lines):")
            _say("\n".join(log[-30:]))
        _say("")
        _say(f"The partly executed notebook was saved to {_display_path(out_nb)}.")
        return 1
    _say("")
    root = " --allow-root" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""  # Jupyter refuses root without it
    _say(f"Open it:            {_jupyter_command()} lab{root} {_display_path(out_nb)}")
    _say("Interactive, wired to a simulator:  ./scripts/demo --lab")
    return 0


# -- JupyterLab wired to a simulator -------------------------------------------------------------
def run_lab(args: argparse.Namespace) -> int:
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        raise SystemExit("demo --lab needs JupyterLab: pip install -e '.[demo]' (./scripts/demo does it).") from None
    src = _resolve_notebook(args.notebook)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / src.name
    if not target.exists():
        shutil.copyfile(src, target)

    _use_this_package()
    env = dict(os.environ)
    sim = None
    if args.real:
        where = env.get("APIKLEY_BASE_URL") or "https://api.apikley.ru"
        _say(f"imagen4 demo: JupyterLab wired to the REAL service at {where} (cells spend credits)")
    else:
        sim = _start_simulator()
        env["APIKLEY_BASE_URL"] = sim.url
        env["APIKLEY_API_KEY"] = DEMO_KEY
        _say(f"imagen4 demo: simulator running at {sim.url} (key {DEMO_KEY})")
    port = _free_port(args.port)
    token = secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={out}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    url = f"http://127.0.0.1:{port}/lab/tree/{target.name}?token={token}"
    # Its own session: a Ctrl-C reaches only this process, which then stops the server and the simulator.
    log = tempfile.NamedTemporaryFile(prefix="imagen4-jupyterlab-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    _interrupt_on_signals()
    try:
        if not _wait_for_lab(proc, port, token):
            err = Path(log.name).read_text(errors="replace")
            _say(f"JupyterLab did not start (log: {log.name}):\n{err[-3000:]}")
            return 1
        _say(f"JupyterLab is running on {url}")
        _say(f"Notebooks in {_display_path(out)}; kernels there talk to the "
             f"{'real service' if args.real else 'simulator'}. Server log: {log.name}")
        _say("Ctrl-C stops JupyterLab" + ("" if args.real else " and the simulator") + ".")
        while proc.poll() is None:
            time.sleep(0.5)
        return proc.returncode or 0
    except KeyboardInterrupt:
        _say("\nstopping JupyterLab" + ("" if args.real else " and the simulator"))
        return 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if sim is not None:
            sim.stop()


def _interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, even where the shell started us with SIGINT ignored."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _wait_for_lab(proc: subprocess.Popen, port: int, token: str, timeout: float = 60.0) -> bool:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with opener.open(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.real and not os.environ.get("APIKLEY_API_KEY", "").strip():
        _say("demo --real needs your key: export APIKLEY_API_KEY=... (and optionally APIKLEY_BASE_URL).")
        return 2
    return run_lab(args) if args.lab else run_headless(args)


if __name__ == "__main__":
    sys.exit(main())
