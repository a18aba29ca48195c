"""What every generated notebook shares: cell helpers, the first cell (real service or simulator), and `build`."""
from __future__ import annotations

import nbformat as nbf


def md(text: str):
    return nbf.v4.new_markdown_cell(text.strip("\n"))


def code(text: str):
    return nbf.v4.new_code_cell(text.strip("\n"))


# The first code cell of every notebook: the real service when a key is configured (APIKLEY_API_KEY, a .env file,
# %imagen4 key), the built-in simulator otherwise, so each notebook runs anywhere.
SETUP = """
%load_ext imagen4_jupyter
%imagen4 simulator --if-no-key
"""
SETUP_NOTE = """
The next cell loads the extension and picks the service: with an API key configured (`APIKLEY_API_KEY`, a `.env`
file beside the notebook, or `%imagen4 key`) it uses the real service; without one it starts the built-in
simulator inside the kernel, so the notebook runs anywhere. Simulated images cost nothing and every one of them
says *simulated*.
"""


def setup_cells() -> list:
    """The note and the cell that start every notebook: the real service with a key, the simulator without."""
    return [md(SETUP_NOTE), code(SETUP)]


def build(cells: list, prefix: str) -> nbf.NotebookNode:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = cells
    for i, cell in enumerate(nb.cells):  # stable ids keep the committed files' diffs small
        cell["id"] = f"{prefix}-{i:02d}"
    return nb
