"""The cells of notebooks/experiments.ipynb: a model comparison grid, a sampled template batch, a dataset export
(imagefolder and Parquet) and the history as a DataFrame. `make_notebooks.py` writes the notebook."""
from __future__ import annotations

from nbcells import code, md, setup_cells

EXPERIMENTS = [
    md("""
# Experiments and datasets

Which model, which wording, which seed: this notebook runs the experiments image people run, and hands the
pictures on as a dataset others can load without writing code.

1. **a model comparison**: an X/Y grid with the three Imagen 4 models on one axis and a word of the prompt on the
   other, each cell captioned with its credits and seconds, and a summary per model;
2. **a sampled template batch**: a prompt template with lists of values, a balanced sample of the combinations
   drawn with a fixed seed, its plan (count and credits) before anything is sent;
3. **a dataset**: the images in the Hugging Face `imagefolder` layout (files with their provenance inside, a
   `metadata.jsonl`, a dataset card), and the same rows in one Parquet file;
4. **the history as a table**: `history_frame()`, one row per task.

Every request here is seeded, so running the notebook again creates no task and costs nothing.
`scripts/demo --notebook notebooks/experiments.ipynb` runs it against the built-in simulator.
"""),
    *setup_cells(),
    md("""
## 1. Three models side by side

`grid(prompt, x=..., y=..., **fixed)`: an axis is any request field (`model`, `seed`, `aspect_ratio`,
`negative_prompt`, `num_images`) or a `{name}` placeholder of the prompt. Here the models run along the columns
and the animal down the rows; `style` and `seed` are the same in every cell. Each caption says the model, the
credits (`~` marks an estimate from the price list) and the seconds the task took; the last lines compare the
models.
"""),
    code("""
from imagen4_jupyter import grid

comparison = grid("A {animal} at dusk, {style}", x={"model": ["fast", "standard", "ultra"]},
                  y={"animal": ["fox", "owl"]}, style="watercolor", seed=7, cell_size=160)
comparison
"""),
    code("""
for line in comparison.summary:  # images, credits per image, median seconds
    print(line)
comparison.save("model-comparison.png")  # the PNG keeps every cell's task id, request, credits and seconds
"""),
    md("""
## 2. A template, sampled

`generate_many` takes a prompt template and lists of values. All combinations of these lists would be 24 tasks;
`sample=6` draws six of them, balanced across each list's values, with `random.Random(sample_seed)`: the same
seed draws the same six. `dry_run=True` shows the count and the estimated credits first.
"""),
    code("""
from imagen4_jupyter import generate_many

values = {"animal": ["fox", "owl", "heron"], "place": ["a snowy forest", "a harbour"],
          "style": ["ink", "oil", "pastel", "linocut"]}
plan = generate_many("A {animal} in {place}, {style}", values=values, sample=6, sample_seed=1, model="fast",
                     seed=11, dry_run=True)
print(plan)
"""),
    code("""
sampled = generate_many("A {animal} in {place}, {style}", values=values, sample=6, sample_seed=1, model="fast",
                        seed=11)
sampled
"""),
    md("""
## 3. A dataset others can load

`export_dataset(source, path)` writes the images with their provenance inside (the stored originals, pixels
untouched), a `metadata.jsonl` with `file_name` and one column per request field (plus task id, model,
`sha256` of the file as written, `source_sha256` of the stored original, credits, created-at and `simulated`)
and a `README.md` dataset card. Images made by a simulator are left out unless `include_simulated=True`; the
card then says so in its first line.
"""),
    code("""
from imagen4_jupyter import export_dataset

folder = export_dataset(comparison, "fox-owl-dataset", include_simulated=True, overwrite=True)
print(open(folder / "README.md").read().splitlines()[0])
print(sorted(p.name for p in folder.iterdir()))
"""),
    md("""
Anyone can load it with the Hugging Face `datasets` library, no code of ours needed:
`load_dataset("imagefolder", data_dir="fox-owl-dataset")`. Here we read the metadata with pandas:
"""),
    code("""
import pandas as pd

meta = pd.read_json(folder / "metadata.jsonl", lines=True)
meta[["file_name", "model", "animal", "seed", "credits", "simulated"]]
"""),
    md("""
`format="parquet"` writes the same rows with the image bytes in one file (it needs `pyarrow`).
"""),
    code("""
try:
    parquet = export_dataset(comparison, "fox-owl.parquet", format="parquet", include_simulated=True,
                             overwrite=True)
    print(len(pd.read_parquet(parquet)), "rows in", parquet.name)
except ImportError as err:  # pyarrow is optional
    print(err)
"""),
    md("""
## 4. The history as a table

`history_frame()` is this notebook's history as a pandas DataFrame, one row per task, in the columns of
`export_history`'s CSV.
"""),
    code("""
from imagen4_jupyter import history_frame

frame = history_frame()
frame.groupby("model")[["credits", "cost_time_ms"]].median()
"""),
]
