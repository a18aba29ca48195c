"""The research and batch notebooks run top to bottom in a real kernel against the simulator, and running them
again costs nothing (every request in them is seeded)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from secrets_guard import watch

from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KEY = watch("notebook-key-0123456789")


@pytest.fixture
def fast_kernel_env(tmp_path, monkeypatch):
    """A fast simulator, and a kernel profile that polls it often (the notebooks use the default schedule)."""
    ipdir = tmp_path / "ipython"
    (ipdir / "profile_default").mkdir(parents=True)
    # (`c.Imagen4Magics.poll_interval = ...` in a config file trips an observer before the magic's __init__ has
    # run, so the setting is applied by %config at kernel start instead)
    (ipdir / "profile_default" / "ipython_kernel_config.py").write_text(
        'c.InteractiveShellApp.exec_lines = ["%load_ext imagen4_jupyter", '
        '"%config Imagen4Magics.poll_interval = 0.05"]\n')
    # limits off: each notebook's kernel paces itself, but two kernels in a row share the simulator's windows, and
    # the counts below are of tasks, not of 429 retries
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.02), generation_time=(0.05, 0.1), image_scale=0.125,
                   enforce_limits=False) as sim:
        monkeypatch.setenv("IPYTHONDIR", str(ipdir))
        monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)
        monkeypatch.setenv("APIKLEY_API_KEY", KEY)
        yield sim


@pytest.fixture
def no_key_env(tmp_path, monkeypatch):
    """No key and no address anywhere: every APIKLEY_* variable removed, no .env, a kernel that polls often."""
    ipdir = tmp_path / "ipython"
    (ipdir / "profile_default").mkdir(parents=True)
    (ipdir / "profile_default" / "ipython_kernel_config.py").write_text(
        'c.InteractiveShellApp.exec_lines = ["%load_ext imagen4_jupyter", '
        '"%config Imagen4Magics.poll_interval = 0.05"]\n')
    monkeypatch.setenv("IPYTHONDIR", str(ipdir))
    for name in [n for n in os.environ if n.startswith("APIKLEY_")]:
        monkeypatch.delenv(name)


def execute(name: str, folder: Path, monkeypatch) -> nbformat.NotebookNode:
    folder.mkdir(exist_ok=True)
    target = folder / name
    shutil.copy(NOTEBOOKS / name, target)
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))  # history in folder/.imagen4/
    nb = nbformat.read(target, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def texts(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text") or (o.get("data") or {}).get("text/plain", ""))
    return "\n".join(out)


def test_every_notebook_starts_with_the_cell_that_picks_the_service():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert len(paths) >= 3, paths
    for path in paths:
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert first.source.startswith("%load_ext imagen4_jupyter\n") and "%imagen4 simulator" in first.source, path
        assert len(first.source.splitlines()) <= 6, path  # short


@pytest.mark.parametrize("name", ["quickstart.ipynb", "reproducible-research.ipynb", "batch-and-grids.ipynb",
                                  "panel.ipynb", "experiments.ipynb"])
def test_every_notebook_runs_anywhere_with_no_key_on_the_simulator(no_key_env, tmp_path, monkeypatch, name):
    """Top to bottom with no APIKLEY_* at all: the first cell starts the in-kernel simulator (an error in any cell
    fails `execute`), and the notebook says its images are simulated."""
    assert not any(n.startswith("APIKLEY_") for n in os.environ)
    nb = execute(name, tmp_path / "anywhere", monkeypatch)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "Simulator started in this kernel: everything made now is marked simulated" in json.dumps(first.outputs)
    metas = [(o.get("metadata") or {}).get("imagen4") for c in nb.cells for o in c.get("outputs", [])
             if "image/png" in (o.get("data") or {})]
    tagged = [m for m in metas if isinstance(m, dict) and "task_id" in m]
    assert all(m.get("simulated") is True for m in tagged)
    grids = [md["imagen4"] for c in nb.cells for o in c.get("outputs", [])
             for md in (o.get("metadata") or {}, (o.get("metadata") or {}).get("image/png") or {})
             if isinstance(md.get("imagen4"), dict) and "grid" in md["imagen4"]]
    assert all(g.get("simulated") is True for g in grids)  # a grid made on the simulator says so
    if name in ("batch-and-grids.ipynb", "experiments.ipynb"):
        assert grids
    if name not in ("batch-and-grids.ipynb", "experiments.ipynb"):  # tables and grids only, no %%imagen4 outputs
        assert tagged
        assert "simulated: made by a simulator" in json.dumps([c.get("outputs") for c in nb.cells])


def test_notebooks_are_generated_from_the_script():
    from importlib import util

    spec = util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    quick = util.spec_from_file_location("make_quickstart", NOTEBOOKS / "make_quickstart.py")
    quickstart = util.module_from_spec(quick)
    quick.loader.exec_module(quickstart)
    generated = {**{name: module.build(cells, prefix) for name, (cells, prefix) in module.NOTEBOOKS.items()},
                 "quickstart.ipynb": quickstart.build()}
    for name, built in generated.items():
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in built.cells], f"regenerate {name}"


def test_research_and_batch_notebooks_run_and_rerun_for_free(fast_kernel_env, tmp_path, monkeypatch):
    sim = fast_kernel_env
    folder = tmp_path / "work"

    research = execute("reproducible-research.ipynb", folder, monkeypatch)
    text = texts(research)
    assert "credits spent:           0.0" in text and "file matches its recorded sha256" in text
    assert (folder / "imagen4-tasks.csv").exists() and len(json.loads((folder / "imagen4-tasks.json").read_text())) == 5

    batch = execute("batch-and-grids.ipynb", folder, monkeypatch)
    sheets = [o["metadata"]["imagen4"] for c in batch.cells for o in c.get("outputs", [])
              if "image/png" in (o.get("data") or {}) and "imagen4" in (o.get("metadata") or {})]
    assert [m["kind"] for m in sheets] == ["prompt x seed", "prompt x aspect ratio", "contact sheet"]
    ids = sheets[0]["task_ids"]  # at the top of the output's metadata, as a cell image's, with every cell's task
    assert len(ids) == 3 and all(len(row) == 3 and all(t in sim.tasks for t in row) for row in ids)
    assert all(m["requests"][0][0]["prompt"] and m["models"][0][0].startswith("google/imagen4") for m in sheets)
    research_sheets = [o["metadata"]["imagen4"] for c in research.cells for o in c.get("outputs", [])
                       if "imagen4" in (o.get("metadata") or {}) and "task_ids" in o["metadata"]["imagen4"]]
    assert [m["kind"] for m in research_sheets] == ["contact sheet"]
    for png in ("fox-prompt-x-seed.png", "harbor-prompt-x-ratio.png", "styles-contact-sheet.png"):
        assert (folder / png).stat().st_size > 1000
    created = sim.count("createTask")
    assert created == 1 + 4 + 6 + 3 + 9 + 10

    # every request in both notebooks is seeded: executing them again sends no createTask at all
    execute("reproducible-research.ipynb", folder, monkeypatch)
    again = execute("batch-and-grids.ipynb", folder, monkeypatch)
    assert sim.count("createTask") == created
    assert "0 tasks created, 6 reused" in texts(again)


def test_panel_notebook_runs_and_its_cell_reuses_the_panel_task(fast_kernel_env, tmp_path, monkeypatch):
    sim = fast_kernel_env
    nb = execute("panel.ipynb", tmp_path / "panel", monkeypatch)
    widget_views = [o for c in nb.cells for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in (o.get("data") or {})]
    assert len(widget_views) >= 2  # `%imagen4 panel` and the scripted Panel()
    assert "same task, nothing spent" in texts(nb)
    assert sim.count("createTask") == 1


def test_experiments_notebook_compares_models_exports_a_dataset_and_reruns_for_free(fast_kernel_env, tmp_path,
                                                                                     monkeypatch):
    sim = fast_kernel_env
    folder = tmp_path / "exp"
    nb = execute("experiments.ipynb", folder, monkeypatch)
    sheets = [o["metadata"]["imagen4"] for c in nb.cells for o in c.get("outputs", [])
              if "image/png" in (o.get("data") or {}) and "imagen4" in (o.get("metadata") or {})]
    assert len(sheets) == 1
    meta = sheets[0]
    assert meta["cols"] == ["fast", "standard", "ultra"] and meta["rows"] == ["fox", "owl"]
    assert all(c > 0 for row in meta["credits"] for c in row) and all(s > 0 for row in meta["seconds"] for s in row)
    assert [line.split(":")[0] for line in meta["summary"]] == ["fast", "standard", "ultra"]
    created = sim.count("createTask")
    assert created == 6 + 6
    rows = [json.loads(x) for x in (folder / "fox-owl-dataset" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["simulated"] for r in rows)  # the simulator announces itself
    assert (folder / "fox-owl-dataset" / "README.md").read_text().startswith("# SIMULATED: 6 of these 6 images")
    assert (folder / "fox-owl.parquet").stat().st_size > 1000
    text = texts(nb)
    assert "imagen4 batch plan: 6 items" in text and "6 rows in fox-owl.parquet" in text

    execute("experiments.ipynb", folder, monkeypatch)  # every request is seeded: nothing is created again
    assert sim.count("createTask") == created
