"""Shared by the reliability tests: figures written to test-artifacts/, and texts for the secrets scan.

`seen(obj)` keeps the str and repr of anything a test produced (exceptions, jobs, HTML bundles) so that
the end-of-run check of `secrets_guard.py` can find any API key in them.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import imagen4_jupyter

REPO = Path(imagen4_jupyter.__file__).resolve().parents[1]
# IMAGEN4_TEST_ARTIFACTS moves it (test_secrets.py runs a pytest of its own that must not touch ours).
ARTIFACTS = Path(os.environ.get("IMAGEN4_TEST_ARTIFACTS") or REPO / "test-artifacts")
# A distinctive key for real kernels, so the scan can tell it from anything else.
KERNEL_KEY = "sk-imagen4-crash-7Qx2Lr9Vb4Zt"

SEEN: list[str] = []


def seen(*objs: Any) -> None:
    """Remember the text and repr of each object (and an exception's cause chain)."""
    for obj in objs:
        SEEN.append(str(obj))
        SEEN.append(repr(obj))
        if isinstance(obj, BaseException):
            SEEN.append(repr(getattr(obj, "__dict__", {})))
            for linked in (obj.__cause__, obj.__context__):
                if linked is not None:
                    SEEN.append(repr(linked))


def write_figures(name: str, data: dict) -> Path:
    """Write `test-artifacts/<name>.json` (with the time of the run)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.json"
    path.write_text(json.dumps({"written": time.strftime("%Y-%m-%d %H:%M:%S"), **data}, indent=2,
                               ensure_ascii=False, default=str) + "\n")
    return path
