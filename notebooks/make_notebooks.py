"""Writes notebooks/reproducible-research.ipynb, batch-and-grids.ipynb, panel.ipynb and experiments.ipynb
(committed).

Edit here, then run: python notebooks/make_notebooks.py
Both run top to bottom headlessly against the simulator:
    scripts/demo --notebook notebooks/batch-and-grids.ipynb --out /tmp/bg
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the cell helpers and the panel notebook's cells beside this file
from experiments_notebook import EXPERIMENTS  # noqa: E402
from nbcells import build, code, md, setup_cells  # noqa: E402
from panel_notebook import PANEL  # noqa: E402

RESEARCH = [
    md("""
# Reproducible research with Imagen 4

Image generation is only useful in research if somebody else (or you, next month) can tell exactly how each
picture was made, and get the same picture again. This notebook shows what the extension keeps for you:

1. **seeds**: a seeded request is fully determined by its text,
2. **reuse**: running a seeded cell again shows the stored images and creates no task, so it costs nothing,
3. **provenance**: every image output carries its task id, request and sha256 in the notebook's metadata,
4. **history**: an append-only log beside the notebook of every task, with the image files,
5. **seed sweeps** with `generate_many`, re-run for free,
6. **export** of the history to CSV or JSON for a paper's supplementary material.

`scripts/demo --notebook notebooks/reproducible-research.ipynb` runs it against the
built-in simulator (no key, no cost). With `APIKLEY_API_KEY` set it runs against the real service.
"""),
    *setup_cells(),
    md("""
## 1. A seeded request

`-s 1234` fixes the seed. Together with the prompt, the negative prompt, the aspect ratio and the number of
images it makes the request *exact*: the extension hashes these fields and remembers the result under that
hash. `-o first` keeps the job handle in a variable.
"""),
    code("""
%%imagen4 -s 1234 -a 4:3 -o first
A botanical illustration of a fern frond, ink and watercolor on cream paper, scientific plate style
---
text, watermark, signature
"""),
    md("""
## 2. Running it again costs nothing

The next cell is the same request. Instead of creating a task, the extension finds the earlier one in the
history and shows its stored images, saying so in one line. We check with the account balance
(`client.credits()`, the same number `%imagen4 credits` shows) that nothing was spent, and that the images are
byte-identical.
"""),
    code("""
from imagen4_jupyter import get_session

session = get_session()  # the session the magic uses: client, history, jobs
credits_before = session.client.credits()
"""),
    code("""
%%imagen4 -s 1234 -a 4:3 -o again
A botanical illustration of a fern frond, ink and watercolor on cream paper, scientific plate style
---
text, watermark, signature
"""),
    code("""
credits_after = session.client.credits()
print("reused from the history:", again.reused)
print("same task:              ", again.task_id == first.task_id, again.task_id)
print("same bytes (sha256):    ", [im.sha256[:16] for im in again.images] == [im.sha256[:16] for im in first.images])
print("credits spent:          ", credits_before - credits_after)
assert again.reused and credits_before == credits_after
"""),
    md("""
`--force` creates a new task anyway (for example to check that the service still produces the same picture
for the same seed), and `%config Imagen4Magics.reuse = 'never'` turns reuse off for the whole notebook.

## 3. Provenance in the notebook itself

Each image output of a `%%imagen4` cell carries metadata under the key `imagen4`: the task id, the full
request, the sha256 of the original file, the model and the times. It is saved in the `.ipynb` file, so the
notebook documents itself. The same facts are on the job handle:
"""),
    code("""
import json

image = first.images[0]
provenance = {
    "task_id": first.task_id,
    "model": "google/imagen4",
    "request": first.request.to_dict(),
    "sha256": image.sha256,
    "size": [image.width, image.height],
    "file": str(image.path),
}
print(json.dumps(provenance, indent=2))
"""),
    md("""
The files are named by their sha256, so a changed or corrupted file is easy to detect:
"""),
    code("""
import hashlib
from pathlib import Path

assert hashlib.sha256(Path(image.path).read_bytes()).hexdigest() == image.sha256
print("file matches its recorded sha256")
"""),
    md("""
## 4. The history

Every task is an entry in `.imagen4/<notebook>.jsonl` beside the notebook: submitted (with the request and the
cell), state changes, and succeeded (URLs, files, sha256s, cost time) or failed. The API key is never written.
`%imagen4 history` shows it; `--search` filters by prompt, seed or task id.
"""),
    code("%imagen4 history --search fern"),
    md("""
## 5. A seed sweep, re-run for free

To study how much a prompt varies with the seed, generate it over a list of seeds. `generate_many` takes
prompts or dicts of request fields, runs them with bounded concurrency, records every task in the same
history and returns a table. Because every request is seeded, running the sweep again creates no task at all.
"""),
    code("""
from imagen4_jupyter import generate_many

prompt = "A lichen-covered granite boulder in a misty pine forest, macro photograph"
sweep = generate_many([{"prompt": prompt, "seed": seed} for seed in (1, 2, 3, 4)], aspect_ratio="1:1")
sweep
"""),
    code("""
rerun = generate_many([{"prompt": prompt, "seed": seed} for seed in (1, 2, 3, 4)], aspect_ratio="1:1",
                      progress=False)
print(rerun.summary())
assert rerun.stats["created"] == 0 and rerun.ok
"""),
    md("""
A contact sheet puts the four results side by side, labelled by seed:
"""),
    code("""
from imagen4_jupyter import contact_sheet

contact_sheet(sweep.results, col_labels=[f"seed {s}" for s in (1, 2, 3, 4)], cell_size=160, title=prompt)
"""),
    md("""
## 6. Export for the paper

`export_history` writes one row per task (time, task id, prompt, negative prompt, aspect ratio, number of
images, seed, state, error, cost time, image paths, sha256s) as CSV or JSON. Image paths are relative to the
exported file, so the table and the `.imagen4/images/` folder can be archived together.
"""),
    code("""
from imagen4_jupyter import export_history

csv_path = export_history(session, "imagen4-tasks.csv")
json_path = export_history(session, "imagen4-tasks.json")
print(csv_path, json_path)
print(csv_path.read_text(encoding="utf-8").splitlines()[0])
"""),
    md("""
`copy_images_to=` also copies every image into a folder with its provenance written *inside* the file (PNG text
chunks, JPEG comment and XMP): task id, model, request and the original's sha256, which
`read_provenance` (or exiftool, or any image viewer's "description") reads back. The table then names the copies.
"""),
    code("""
from imagen4_jupyter.api.provenance import read_provenance

export_history(session, "imagen4-tasks-with-images.json", copy_images_to="imagen4-images")
copy = sorted(Path("imagen4-images").iterdir())[0]
print(copy, json.dumps(read_provenance(copy), indent=1)[:400])
"""),
    code("""
import csv

with open(csv_path, newline="", encoding="utf-8") as fh:
    rows = list(csv.DictReader(fh))
for row in rows:
    print(f"{row['task_id'] or '(unknown)':30} seed={row['seed'] or '-':>5}  {row['state']:8} {row['prompt'][:50]}")
"""),
    md("""
## Checklist

- seed every request you want to be able to reproduce;
- keep the `.imagen4/` folder with the notebook (it holds the log and the original images);
- cite the task ids and sha256s from the export, and the package version:
"""),
    code("""
import imagen4_jupyter

print("imagen4-jupyter", imagen4_jupyter.__version__, "· model google/imagen4 ·", len(rows), "tasks in the export")
"""),
]


BATCH = [
    md("""
# Batches and grids

Many prompts at once, and the X/Y grids image-generation users know:

1. `generate_many` over a list of prompts: bounded concurrency, one shared backoff when the service rate
   limits, a progress bar, results as a table;
2. from a pandas DataFrame column (when pandas is installed);
3. resuming: running a batch again follows or reuses its tasks instead of creating new ones;
4. a **prompt x seed** grid and a **prompt x aspect ratio** grid, each one labelled image, saved to a file.

`scripts/demo --notebook notebooks/batch-and-grids.ipynb` runs it against the built-in
simulator (no key, no cost).
"""),
    md("""
Loading the extension is optional for the Python API, but it makes `generate_many` share the magic's session:
the same history file beside this notebook, the same settings (`%config Imagen4Magics`), the same service.
"""),
    *setup_cells(),
    md("""
## 1. A list of prompts

Every item is validated before anything is sent (a bad one is an error naming its index). At most
`concurrency` tasks run at once; when the service answers *429 Too Many Requests*, every submission of the
batch pauses until its `Retry-After` has passed. A task request whose outcome is unknown (sent, but the
connection dropped) is never resent: it is reported as `lost-unknown` instead, so you never pay twice.
Keyword arguments such as `aspect_ratio=` apply to every item.
"""),
    code("""
from imagen4_jupyter import generate_many

prompts = [
    "A lighthouse on a cliff at dusk, oil painting",
    "A lighthouse on a cliff at dusk, linocut print",
    "A lighthouse on a cliff at dusk, isometric 3D render",
    "A lighthouse on a cliff at dusk, children's book illustration",
    "A lighthouse on a cliff at dusk, long-exposure photograph",
    "A lighthouse on a cliff at dusk, art nouveau poster",
]
styles = generate_many(prompts, aspect_ratio="16:9", seed=5, concurrency=3)
styles
"""),
    md("""
`.rows` is the same table as plain dicts (index, prompt, params, task id, state, image paths, error), and
`.stats` has the numbers of the run:
"""),
    code("""
print(styles.rows[0])
print(styles.stats)
"""),
    md("""
## 2. From a DataFrame

`generate_many` takes a pandas Series (a column of prompts) or a DataFrame with columns named after request
fields (`prompt`, `seed`, `aspect_ratio`, `negative_prompt`, `num_images`; other columns are ignored), and
`.to_dataframe()` gives the results back as a DataFrame. Without pandas the same works with a list of dicts.
"""),
    code("""
try:
    import pandas as pd
except ImportError:
    pd = None

plan = [
    {"prompt": "A ceramic teapot shaped like a snail, studio photo", "seed": 21},
    {"prompt": "A ceramic teapot shaped like an owl, studio photo", "seed": 22},
    {"prompt": "A ceramic teapot shaped like a turtle, studio photo", "seed": 23},
]
if pd is not None:
    frame = pd.DataFrame(plan)
    teapots = generate_many(frame)  # whole rows; generate_many(frame["prompt"], seed=21) takes one column
    table = teapots.to_dataframe()
else:
    print("pandas is not installed here: using the list of dicts and .rows")
    teapots = generate_many(plan)
    table = [{k: row[k] for k in ("index", "prompt", "task_id", "state")} for row in teapots.rows]
table
"""),
    md("""
## 3. Resuming

Each task of a batch is recorded in the history with the batch and its position. Running the same batch again
(after a kernel restart, an interrupt or a `timeout=`) shows the finished items without a request, follows
the unfinished tasks, and only creates tasks for items that were never sent. `force=True` creates everything
anew.
"""),
    code("""
again = generate_many(prompts, aspect_ratio="16:9", seed=5, concurrency=3, progress=False)
print(again.summary())
assert again.stats["created"] == 0 and again.ok
"""),
    md("""
## 4. Prompt x seed grid

`prompt_seed_grid` runs one task per (prompt, seed) through `generate_many` and lays the results out as one
image: a row per prompt, a column per seed, labelled. Thumbnails are at most `cell_size` pixels a side, so the
sheet stays small; the grid knows the task id of every cell.
"""),
    code("""
from imagen4_jupyter import prompt_seed_grid

grid = prompt_seed_grid(
    ["A red fox in fresh snow", "A red fox in a field of tall grass at golden hour", "A red fox, origami"],
    seeds=[1, 2, 3], aspect_ratio="1:1", cell_size=160)
grid
"""),
    code("""
path = grid.save("fox-prompt-x-seed.png")  # labels, task ids and requests inside: read_provenance(path)
print(path, grid.image.size)
for label, ids in zip(grid.row_labels, grid.task_ids):
    print(f"{label[:40]:40}", ids)
"""),
    md("""
## 5. Prompt x aspect ratio grid

The same prompts in every aspect ratio the model supports (`1:1`, `16:9`, `9:16`, `3:4`, `4:3`), with one seed:
"""),
    code("""
from imagen4_jupyter import prompt_ratio_grid

ratios = prompt_ratio_grid(["A quiet harbor town at dawn, watercolor", "A desert highway, 1970s postcard"],
                           seed=9, cell_size=128)
ratios.save("harbor-prompt-x-ratio.png")
ratios
"""),
    md("""
## 6. A contact sheet of anything

`contact_sheet` lays out any results (a batch, jobs, `Result`s, image files) with optional row and column
labels; a cell with several images tiles them. It shows as one image whose output metadata names every cell's
task, request and model (`.image` is the PIL image; `as_bytes=True` gives PNG bytes).
"""),
    code("""
from imagen4_jupyter import contact_sheet

sheet = contact_sheet(styles, cols=3, cell_size=160, title="One prompt, six styles (seed 5)")
sheet.save("styles-contact-sheet.png")  # the PNG keeps the provenance too
sheet
"""),
]


NOTEBOOKS = {"reproducible-research.ipynb": (RESEARCH, "research"), "batch-and-grids.ipynb": (BATCH, "batch"),
             "panel.ipynb": (PANEL, "panel"), "experiments.ipynb": (EXPERIMENTS, "experiments")}

if __name__ == "__main__":
    for name, (cells, prefix) in NOTEBOOKS.items():
        out = HERE / name
        nbf.write(build(cells, prefix), out)
        print(f"wrote {out}")
