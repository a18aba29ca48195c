"""Where a notebook's history lives: which notebook this kernel runs, and its `.imagen4/<name>.jsonl`."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

FOLDER = ".imagen4"


def find_notebook(user_ns: dict | None = None, configured: str | None = None) -> tuple[Path | None, str]:
    """The notebook path and how it was found: configuration, JupyterLab's JPY_SESSION_NAME, VS Code."""
    if configured:
        return Path(configured).expanduser().resolve(), "configuration"
    env = os.environ.get("JPY_SESSION_NAME")
    if env and env.endswith(".ipynb"):
        path = Path(env)
        if not path.is_absolute():
            path = (Path.cwd() / path.name) if not (Path.cwd() / path).exists() else Path.cwd() / path
        return path.resolve(), "JPY_SESSION_NAME"
    vsc = (user_ns or {}).get("__vsc_ipynb_file__")
    if isinstance(vsc, str) and vsc:
        return Path(vsc).resolve(), "VS Code"
    return None, "working directory"


def history_path(notebook: Path | None, folder: str | None = None) -> Path:
    """`<notebook dir>/.imagen4/<notebook stem>.jsonl`, or `<cwd>/.imagen4/history.jsonl`."""
    if folder:
        base = Path(folder).expanduser()
        return base / (f"{notebook.stem}.jsonl" if notebook else "history.jsonl")
    if notebook is None:
        return Path.cwd() / FOLDER / "history.jsonl"
    return notebook.parent / FOLDER / f"{notebook.stem}.jsonl"


def warn_unwritable(path: Any, err: OSError, what: str) -> None:
    """Say (a RuntimeWarning, one line) that the history could not be written and what that means."""
    warnings.warn(f"imagen4: the history {path} could not be written ({type(err).__name__}: "
                  f"{err.strerror or err}). {what}; check the history folder.", RuntimeWarning, stacklevel=4)


def unwritable_line(path: Any, err: OSError) -> str:
    """Why a request was refused when its record could not be written, and what to do, in one line."""
    return (f"Not sent: the history {path} could not be written ({err.strerror or err}), and nothing is sent "
            "without its record. Make that folder writable (or free disk space), or choose another history folder.")


def where_line(path: Path, found_by: str) -> str:
    """One line: where the history is kept and why."""
    if found_by == "working directory":
        return (f"imagen4 history: {path} (notebook not detected; set "
                "%config Imagen4Magics.notebook = 'name.ipynb' to keep one history per notebook)")
    return f"imagen4 history: {path} (notebook found through {found_by})"


def credentials_start(notebook: Path | None) -> Path:
    """Where the nearest `.env` is looked for: the notebook's folder, else the working directory."""
    return notebook.parent if notebook else Path.cwd()
