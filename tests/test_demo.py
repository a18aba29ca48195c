"""The README's demo command, end to end: `scripts/demo` in a subprocess, real kernel, simulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

RUNNER = Path(__file__).resolve().parent.parent / "scripts" / "run_demo.py"
sys.path.insert(0, str(RUNNER.parent))
from run_demo import DEFAULT_NOTEBOOK, summarize  # noqa: E402

pytestmark = pytest.mark.kernel

IMAGE_MIMES = ("image/png", "image/jpeg")


def run_demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIKLEY_", "JPY_"))}
    return subprocess.run([sys.executable, str(RUNNER), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def image_outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if any(m in (o.get("data") or {}) for m in IMAGE_MIMES)]


def imagen4_meta(output: dict) -> dict | None:
    md = output.get("metadata") or {}
    if isinstance(md.get("imagen4"), dict):
        return md["imagen4"]
    for mime in IMAGE_MIMES:
        if isinstance(md.get(mime), dict) and isinstance(md[mime].get("imagen4"), dict):
            return md[mime]["imagen4"]
    return None


def output_texts(nb) -> list[str]:
    """Every text an executed notebook's outputs show: streams, text/plain, text/html, errors."""
    texts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(o.get("text") or "")
            texts += [(o.get("data") or {}).get(m, "") for m in ("text/plain", "text/html")]
            texts += o.get("traceback") or []
    return [t for t in texts if t]


def test_demo_runs_a_python_api_notebook(tmp_path):
    """The runner itself: simulator wired through the environment, kernel cwd = output folder, summary."""
    src = tmp_path / "api.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import os\n"
        "from imagen4_jupyter import Imagen4Client\n"
        "assert os.environ['APIKLEY_BASE_URL'].startswith('http://127.0.0.1:')\n"
        "client = Imagen4Client(cache_dir='.imagen4/images')\n"
        "result = client.generate('A lighthouse at dawn', seed=1, aspect_ratio='16:9')\n"
        "print(result.task_id)\n"
        "result.images[0]")]
    nbformat.write(nb, src)
    out = tmp_path / "out"
    proc = run_demo("--out", str(out), "--notebook", str(src))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "createTask   : 1 request seen by the simulator" in proc.stdout
    executed = nbformat.read(out / "api.ipynb", as_version=4)
    assert summarize(executed)["errors"] == 0
    assert len(image_outputs(executed)) == 1
    # the kernel ran in the output folder: the client's relative cache_dir landed there
    assert list((out / ".imagen4" / "images").glob("*.png"))


def test_demo_reports_a_failing_cell(tmp_path):
    src = tmp_path / "bad.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise RuntimeError('boom from the notebook')")]
    nbformat.write(nb, src)
    proc = run_demo("--out", str(tmp_path / "out"), "--notebook", str(src))
    assert proc.returncode == 1
    assert "boom from the notebook" in proc.stdout
    assert (tmp_path / "out" / "bad.ipynb").exists()  # the partly executed notebook is kept


def test_demo_real_needs_a_key(tmp_path):
    proc = run_demo("--real", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "APIKLEY_API_KEY" in proc.stdout


def test_quickstart_through_the_demo(tmp_path):
    """The README's first command: the quickstart notebook, executed headlessly on the simulator."""
    assert DEFAULT_NOTEBOOK.is_file()
    out = tmp_path / "demo-output"
    proc = run_demo("--out", str(out), timeout=420)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    executed = nbformat.read(out / "quickstart.ipynb", as_version=4)
    s = summarize(executed)
    assert s["errors"] == 0 and s["ran"] == s["code_cells"]
    tagged = [imagen4_meta(o) for o in image_outputs(executed) if imagen4_meta(o) is not None]
    # cells: -s 42 (1 image), -a 16:9 -n 2 (2), {subject} (1), -o job (1) => at least 5 tagged images
    assert len(tagged) >= 5, proc.stdout
    assert all(m.get("task_id") for m in tagged)
    # the demo's simulator answers as one: everything says simulated, nothing claims the real service
    assert all(m.get("simulated") is True for m in tagged), tagged
    shown = [" ".join(t.split()) for t in output_texts(executed)]  # long lines are broken between words
    assert not [t for t in shown if "real service" in t.lower()], shown
    cards = [t for t in shown if "imagen4-card" in t]
    assert cards and all("imagen4-simulated" in t and "simulated" in t for t in cards)
    assert any(t.startswith("imagen4: Apikley at http://127.0.0.1:") and "not asked yet" in t for t in shown)
    assert any("Using a simulator at http://127.0.0.1:" in t for t in shown), shown
    assert any("imagen4: a simulator at http://127.0.0.1:" in t for t in shown), shown  # %imagen4 info
    assert any("Remaining credits:" in t and "(simulated)" in t for t in shown), shown
    history = out / ".imagen4" / "quickstart.jsonl"
    assert history.is_file(), sorted(p.name for p in out.rglob("*"))
    events = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    assert {m["task_id"] for m in tagged} <= {e.get("task_id") for e in events}

    # --keep: the seeded magic cells reuse the stored images; only the plain Python API cell creates a task
    again = run_demo("--out", str(out), "--keep", timeout=420)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "createTask   : 1 request seen by the simulator" in again.stdout, again.stdout
