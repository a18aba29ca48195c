"""Writes notebooks/quickstart.ipynb (committed). Edit here, then run: python notebooks/make_quickstart.py"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from nbcells import SETUP, code, md  # noqa: E402
from nbcells import build as build_notebook  # noqa: E402  (one set of helpers for every notebook)

CELLS = [
    md("""
# Imagen 4 in Jupyter: quickstart

Google's **Imagen 4** text-to-image model, sold through **Apikley**'s asynchronous task API, from a notebook:
write a prompt in a `%%imagen4` cell, get the images in that cell.

This notebook goes through the basics, one step per cell:

1. load the extension (the real service with an API key, the built-in simulator without),
2. your API key,
3. a first image,
4. options: aspect ratio, number of images, a negative prompt, `{variables}`,
5. capturing the job in a variable,
6. the per-notebook history,
7. the plain Python API, which works outside Jupyter too.

`./scripts/demo` runs this notebook headlessly against the project's local simulator of the service (no key,
no cost) and saves the executed copy with its images in `demo-output/`.
"""),
    md("""
## 1. Load the extension, pick the service

The first line registers the cell magic `%%imagen4` and the line magic `%imagen4 <subcommand>`. The rest picks
the service: with an API key configured it uses the real one; without a key it starts the built-in simulator
inside the kernel, so this notebook runs anywhere. Simulated images cost nothing and every one says *simulated*.
"""),
    code(SETUP),
    md("""
## 2. Your API key

The extension reads the key from the environment variable **`APIKLEY_API_KEY`**, and the service address from
`APIKLEY_BASE_URL` (default `https://api.apikley.ru`); then from a `.env` file beside the notebook; then from
`%imagen4 key`, which asks for it with a hidden prompt and keeps it in memory only. For example:

```bash
export APIKLEY_API_KEY=...        # your Apikley key
jupyter lab
```

Keep the key out of the notebook itself: a key typed into a cell is saved with the notebook.
The history this extension writes never contains the key. With a key set after the first cell, run
`%imagen4 simulator --stop` to switch from the simulator to the real service.

`./scripts/demo` sets both variables for you, pointing them at a local simulator of the service that runs on
`127.0.0.1`, so every cell below works without an account and costs nothing. `%imagen4 info` says which service
this notebook uses, whether a key is set and from where (never the key), and where the history is kept:
"""),
    code("%imagen4 info"),
    md("""
## 3. A first image

The body of the cell is the prompt. `-s 42` fixes the seed, which makes the cell reproducible: run it again
and the extension shows the images it stored the first time instead of creating (and paying for) a new task.
Use `--force` when you want a fresh task anyway.

While a task runs, the cell shows a status card (task id, state, elapsed time). In an interactive notebook
the cell returns at once and the kernel stays free; the images appear in this cell when they are ready.
"""),
    code("""
%%imagen4 -s 42
A watercolor lighthouse on a rocky coast at dawn, soft pastel light, gentle waves
"""),
    md("""
## 4. Options

- `-a 16:9`: aspect ratio, one of `1:1`, `16:9`, `9:16`, `3:4`, `4:3`,
- `-n 2`: number of images, 1 to 4,
- a line holding only `---` separates the prompt (above) from the **negative prompt** (below): what the image
  should not contain.

`%%imagen4?` lists every flag.
"""),
    code("""
%%imagen4 -a 16:9 -n 2 -s 7
A cozy reading nook by a large window, rain on the glass, warm lamp light, film photograph
---
people, text, watermark
"""),
    md("""
`{name}` in the prompt is replaced by the value of `name` from the notebook; `{{` and `}}` stand for literal
braces. An unknown name is an error, and nothing is sent.
"""),
    code("""
subject = "a red vintage bicycle"
"""),
    code("""
%%imagen4 -a 4:3 -s 11
A travel poster of {subject} leaning on a stone wall, bold flat colors, {{no text}}
"""),
    md("""
## 5. Capture the job

`-o job` binds the job handle to the name `job` as soon as the task is created. `job.task_id` is the service's
task id, `job.wait()` blocks until the images are there (and returns the result), and `job.images` lists them:
files on disk, named by their sha256.
"""),
    code("""
%%imagen4 -o job -a 3:4 -s 3
A paper-cut illustration of a fox in a snowy birch forest, layered, soft shadows
"""),
    code("""
result = job.wait()
print("task:", job.task_id)
for image in job.images:
    print(f"{image.width}x{image.height} {image.mime}  sha256 {image.sha256[:12]}...  {image.path}")
"""),
    md("""
## 6. History

Every task is logged in a `.imagen4/` folder beside the notebook: an append-only JSON Lines file with the
request, the task id, the states, the result and the image files. That is what makes re-running seeded cells
free, and what `%imagen4 resume` uses to finish tasks a kernel restart left behind.
`%imagen4 history` shows it (`--limit N`, `--search TEXT`).
"""),
    code("%imagen4 history"),
    md("""
Other subcommands: `%imagen4 show TASK_ID`, `%imagen4 status TASK_ID`, `%imagen4 wait` (block until every
pending task is done), `%imagen4 resume`, and `%imagen4 credits` (the account's remaining credits):
"""),
    code("%imagen4 credits"),
    md("""
## 7. The Python API

The same client works in scripts and anywhere else. In a script, `Imagen4Client()` reads `APIKLEY_API_KEY` and
`APIKLEY_BASE_URL` from the environment; here it is handed the credentials this notebook uses (your key, or the
simulator's from the first cell; neither is shown). `generate()` creates the task, waits for it and downloads the
images. `submit()` returns a job handle at once instead.
"""),
    code("""
from imagen4_jupyter import Imagen4Client, get_session

creds = get_session().credentials()  # the key and address in force; a script would call Imagen4Client()
client = Imagen4Client(creds.key, creds.base_url, cache_dir=".imagen4/images")  # files beside this notebook
result = client.generate("An isometric pixel-art island with a tiny castle", seed=1, aspect_ratio="1:1")
print(result.task_id, result.state, result.paths, "(simulated)" if client.simulated else "")
result.images[0]
"""),
    md("""
## Next

- `%%imagen4?` for every flag; `%config Imagen4Magics` for the defaults you can change.
- The project's README: using the real service, running the simulator on its own, the other notebooks.
"""),
]


def build() -> nbf.NotebookNode:
    return build_notebook(CELLS, "quickstart")


if __name__ == "__main__":
    out = HERE / "quickstart.ipynb"
    nbf.write(build(), out)
    print(f"wrote {out}")
