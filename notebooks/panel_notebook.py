"""The cells of notebooks/panel.ipynb (written by make_notebooks.py)."""
from __future__ import annotations

from nbcells import code, md, setup_cells

PANEL = [
    md("""
# Exploring with the panel

`%imagen4 panel` opens a panel of controls over the same session as the `%%imagen4` cells: prompt and negative
prompt (with a live count against the 5000-character limit), the five aspect ratios drawn as shapes, 1-4
images, a seed with **random** and **keep**, and **Generate** (which you can press again while tasks run).
Below it: the live task list, a gallery (click a thumbnail for a larger view with *reuse these settings*,
*copy seed* and *save as*) and this notebook's history, searchable.

When you like a result, **Insert as code** puts the equivalent `%%imagen4` cell below the panel's cell, so
the exploration becomes a reproducible cell. Tasks started here appear in `%imagen4 history`, and tasks of
`%%imagen4` cells appear in the panel's history tab.

`scripts/demo --notebook notebooks/panel.ipynb` runs this notebook against the built-in
simulator; `./scripts/demo --lab` opens JupyterLab wired to it, where you can click around.
"""),
    *setup_cells(),
    code("%imagen4 panel"),
    md("""
## The panel from Python

Everything the buttons do is also a method, which is how this notebook can run unattended (and how you can
script an exploration). `Panel()` builds a panel on the kernel's session; the display above is another view
of the same session.
"""),
    code("""
from imagen4_jupyter import Panel

panel = Panel()
panel.prompt.value = "A paper lantern floating over a misty lake at night, long exposure photograph"
panel.ratio.value = "16:9"
panel.num.value = "2"
panel.seed.value = "2024"
record = panel.submit(wait=True)          # what the Generate button does; wait=True: until the task is created
result = record["job"].wait()             # until the images are stored
print(result.task_id, [f"{im.width}x{im.height}" for im in result.images])
panel
"""),
    md("""
## From exploration to a reproducible cell

**Insert as code** writes the cell below for you in JupyterLab and Notebook 7; here is the code it inserts.
Running that cell shows the stored images again without creating a task, because the seeded request is
exactly the same.
"""),
    code("""
from imagen4_jupyter.notebook.panel import cell_code

print(cell_code(result.request))
"""),
    code("""
%%imagen4 -a 16:9 -n 2 -s 2024 -o again
A paper lantern floating over a misty lake at night, long exposure photograph
"""),
    code("""
assert again.task_id == result.task_id, "the cell reused the panel's task"
print("same task, nothing spent:", again.task_id)
"""),
    code("%imagen4 history --limit 3"),
    code("panel.close()"),
]
