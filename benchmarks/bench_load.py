"""Figure 3: load time of `%load_ext imagen4_jupyter` against bare IPython, in fresh processes.

Each repetition starts a new Python process that creates an IPython shell (as a kernel does), then either
stops (bare) or runs `%load_ext imagen4_jupyter` (with an empty history, and with a 10,000-task one).
The variants run interleaved (bare, import, load, load with a big history; then again), at least 10 times
each in a full run, so background load on the shared machine hits them alike. Reported: the median wall time
of the whole process, the ratio of `%load_ext` to a bare IPython start (the median over the interleaved
pairs of load wall / bare wall, whole processes), the median of `%load_ext` itself timed inside the process,
and which heavy modules `import imagen4_jupyter` pulls in (`sys.modules`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t1 = time.perf_counter()
mode = sys.argv[1]
out = {"shell_ms": (t1 - t0) * 1000}
if mode == "import":
    import imagen4_jupyter
    out["import_ms"] = (time.perf_counter() - t1) * 1000
elif mode == "load":
    import io, contextlib
    with contextlib.redirect_stdout(io.StringIO()) as said:
        ip.run_line_magic("load_ext", "imagen4_jupyter")
    out["load_ms"] = (time.perf_counter() - t1) * 1000
    out["said"] = said.getvalue()
out["modules"] = {m: m in sys.modules for m in ("ipywidgets", "PIL", "requests", "urllib3",
                                                 "imagen4_jupyter.notebook.panel", "imagen4_jupyter.research.batch",
                                                 "imagen4_jupyter.research.grids")}
print("RESULT " + json.dumps(out))
"""


def _child(mode: str, cwd: Path) -> tuple[float, dict]:
    # byte-code caches in a folder of the run's own, as an installed package has them (pip compiles on install,
    # and a source checkout with PYTHONDONTWRITEBYTECODE would otherwise compile this package in every process)
    env = dict(os.environ, APIKLEY_BASE_URL="http://127.0.0.1:9", APIKLEY_API_KEY="bench-key",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               IPYTHONDIR=str(cwd / ".ipython"), PYTHONPYCACHEPREFIX=str(cwd.parent / "pyc"))
    env.pop("JPY_SESSION_NAME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    wall = (time.perf_counter() - t) * 1000
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"child {mode} failed: {proc.stderr[-2000:]}")
    return wall, json.loads(line[0][7:])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else max(10, args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        empty, big = Path(tmp) / "empty", Path(tmp) / "big"
        empty.mkdir()
        big.mkdir()
        (empty / ".ipython").mkdir()
        (big / ".ipython").mkdir()
        from benchmarks.bench_history import write_history

        write_history(big / ".imagen4" / "history.jsonl", 1000 if args.quick else 10_000, image_files=False)
        _child("bare", empty)  # warm the OS file cache once for every variant
        _child("load", empty)
        samples: dict[str, list] = {"bare": [], "import": [], "load": [], "load_big": []}
        info: dict[str, dict] = {}
        for _ in range(reps):  # interleaved, so background load hits every variant alike
            for name, mode, cwd in (("bare", "bare", empty), ("import", "import", empty), ("load", "load", empty),
                                    ("load_big", "load", big)):
                wall, out = _child(mode, cwd)
                samples[name].append((wall, out))
                info[name] = out
    med = {k: statistics.median(w for w, _ in v) for k, v in samples.items()}
    inner = {"import": statistics.median(o["import_ms"] for _, o in samples["import"]),
             "load": statistics.median(o["load_ms"] for _, o in samples["load"]),
             "load_big": statistics.median(o["load_ms"] for _, o in samples["load_big"])}
    ratio = {k: statistics.median(w / b for (w, _), (b, _) in zip(samples[k], samples["bare"], strict=True))
             for k in ("import", "load", "load_big")}
    mods = info["import"]["modules"]
    big_n = "1,000" if args.quick else "10,000"
    print(f"Load time: {reps} fresh processes per variant, interleaved, medians")
    print(f"{'variant':44} {'process wall':>13} {'over bare':>10} {'ratio':>7} {'in-process':>11}")
    print(f"{'bare IPython shell (baseline)':44} {med['bare']:11.0f}ms {'':>10} {'1.00x':>7} {'':>11}")
    for key, label in (("import", "+ import imagen4_jupyter"), ("load", "+ %load_ext (empty history)"),
                       ("load_big", f"+ %load_ext ({big_n}-task history)")):
        print(f"{label:44} {med[key]:11.0f}ms {med[key] - med['bare']:+8.0f}ms {ratio[key]:6.2f}x "
              f"{inner[key]:9.1f}ms")
    print("modules after `import imagen4_jupyter`: "
          + ", ".join(f"{m}={'yes' if v else 'no'}" for m, v in mods.items()))
    print(f"`import imagen4_jupyter` imports ipywidgets: {'YES' if mods['ipywidgets'] else 'no'}; after "
          f"%load_ext: {'YES' if info['load']['modules']['ipywidgets'] else 'no'}")
    return {"bare_ms": med["bare"], "load_ms": med["load"], "load_over_bare_ms": med["load"] - med["bare"],
            "load_inprocess_ms": inner["load"], "load_big_over_bare_ms": med["load_big"] - med["bare"],
            "load_big_inprocess_ms": inner["load_big"], "import_over_bare_ms": med["import"] - med["bare"],
            "ipywidgets_on_import": mods["ipywidgets"], "ipywidgets_on_load": info["load"]["modules"]["ipywidgets"],
            "reps": reps, "big_tasks": 1000 if args.quick else 10_000, "load_ratio": ratio["load"],
            "load_big_ratio": ratio["load_big"], "import_ratio": ratio["import"]}


if __name__ == "__main__":
    main()
