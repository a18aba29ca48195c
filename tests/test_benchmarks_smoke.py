"""The benchmarks keep working: `benchmarks/run.py --quick` prints every figure and the summary.

This checks that each figure runs end to end on a small scale (real kernels, nbclient, the simulator over
loopback), not the goals: quick numbers on a busy CI machine mean little. The full run is in
benchmarks/README.md.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.kernel


def test_quick_benchmarks_print_every_figure():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", ""))
                                                      if p))
    t = time.monotonic()
    out = subprocess.run([sys.executable, "benchmarks/run.py", "--quick"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=240)
    seconds = time.monotonic() - t
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for n in range(1, 7):
        assert f"=== Figure {n}:" in text, text
    for needle in ("median lag", "p99 trivial cell", "%load_ext over bare IPython", "reuse lookup",
                   "%imagen4 history page", "unfinished scan", "per image, smooth images, preview", "batch of 20",
                   "figures printed: 1, 2, 3, 4, 5, 6"):
        assert needle in text, text
    assert re.search(r"imports ipywidgets\s*\|\s*no\s", text), text  # this one is a property, not a timing
    assert not re.search(r"\bnan\b", text)
    assert seconds < 120, f"the quick benchmarks took {seconds:.0f} s"
