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
    for n in range(1, 9):
        assert f"=== Figure {n}:" in text, text
    for needle in ("median lag, 1 in flight", "median lag, 10 in flight", "median lag, 30 in flight",
                   "p99 trivial cell", "iopub messages/s", "%load_ext over bare IPython", "reuse lookup",
                   "%imagen4 history page", "unfinished scan", "per image, smooth images, preview",
                   "batch of 40, both limits", "callback mode: median lag", "callback mode: status requests",
                   "8 soak of", "figures printed: 1, 2, 3, 4, 5, 6, 7, 8"):
        assert needle in text, text
    # properties rather than timings: every task finished, the batch lost nothing, every callback arrived
    assert "NOT STORED" not in text, text
    assert re.search(r"batch of 40, both limits\s*\|[^|]*\b0 lost", text), text
    assert re.search(r"(\d+)/\1 hinted", text), text
    assert re.search(r"imports ipywidgets\s*\|\s*no\s", text), text  # this one is a property, not a timing
    assert not re.search(r"\bnan\b", text)
    assert seconds < 120, f"the quick benchmarks took {seconds:.0f} s"
