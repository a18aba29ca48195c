"""Run every benchmark figure and print each beside its baseline (measured in the same run) and its goal.

    python -m benchmarks [--quick] [--only 1,4]      (or: python benchmarks/run.py ...)

--quick runs each figure on a small scale to check that it still works (CI); its numbers mean little.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIGURES = {
    1: ("lag and requests per task under the documented query budget", "bench_polling"),
    2: ("kernel responsiveness with 100 tasks in flight", "bench_kernel"),
    3: ("load time", "bench_load"),
    4: ("history at 10,000 tasks", "bench_history"),
    5: ("notebook size", "bench_notebook"),
    6: ("the 200-task batch under both documented limits", "bench_batch"),
    7: ("callback mode", "bench_callbacks"),
    8: ("soak: 1,000 tasks under the documented limits with 10% random faults", "soak"),
}


def machine() -> str:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"

    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or "?"
    return (f"{os.cpu_count()} cores ({sh('nproc')} usable, {cpu}), {mem} GiB RAM, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; load average {sh('cat /proc/loadavg')}")


def summary(results: dict) -> list[tuple[str, str, str, str, str]]:
    """(figure, ours, baseline, goal, met) rows."""
    rows = []
    if 1 in results:
        res = results[1]["results"]
        for level in results[1]["levels"]:
            base, fixed, smart = res["advised"][level], res["fixed"][level], res["smart"][level]
            ratio = smart["lag_median"] / base["lag_median"]
            rows.append((f"1 median lag, {level} in flight (ours / advised)",
                         f"{smart['lag_median']:.2f} s = {ratio:.2f}x (p90 {smart['lag_p90']:.2f} s)",
                         f"advised {base['lag_median']:.2f} s; fixed 0.5 s {fixed['lag_median']:.2f} s",
                         "<= 0.25x", _ok(ratio <= 0.25)))
            rows.append((f"1 status requests per task, {level} in flight",
                         f"{smart['requests_per_task']:.1f} ({smart['429']} x 429)",
                         f"advised {base['requests_per_task']:.1f} ({base['429']} x 429); fixed 0.5 s "
                         f"{fixed['requests_per_task']:.1f} ({fixed['429']} x 429)",
                         "<= advised", _ok(smart["requests_per_task"] <= base["requests_per_task"])))
    if 2 in results:
        r = results[2]
        diff = r["busy_p99"] - r["idle_p99"]
        rows.append((f"2 p99 trivial cell, {r['in_flight']} tasks in flight", f"{r['busy_p99']:.1f} ms "
                     f"(p50 {r['busy_p50']:.1f})", f"idle {r['idle_p99']:.1f} ms (p50 {r['idle_p50']:.1f})",
                     "<= idle + 10 ms", _ok(diff <= 10)))
        rows.append((f"2 iopub messages/s, {r['in_flight']} tasks in flight",
                     f"{r['iopub_per_s']:.1f}: card updates {r['updates_per_s']:.1f}, the cells' own "
                     f"{r['own_per_cell']:.2f} a cell", f"idle {r['idle_iopub_per_s']:.1f}: the cells' own "
                     f"{r['idle_own_per_cell']:.2f} a cell", "card updates <= 20/s",
                     _ok(r["updates_per_s"] <= 20 and r["own_per_cell"] <= r["idle_own_per_cell"] + 0.05)))
        rows.append(("2 extra kernel threads", f"{r['extra_threads']} ({r['imagen4_threads']} named imagen4-*)",
                     f"{r['threads_bare']} threads before %load_ext", "<= 4",
                     _ok(r["extra_threads"] <= 4)))
    if 3 in results:
        r = results[3]
        rows.append((f"3 %load_ext over bare IPython ({r['reps']} pairs)",
                     f"{r['load_ratio']:.2f}x, +{r['load_over_bare_ms']:.0f} ms (in-process "
                     f"{r['load_inprocess_ms']:.0f} ms)", f"bare {r['bare_ms']:.0f} ms", "<= 1.10x",
                     _ok(r["load_ratio"] <= 1.10)))
        rows.append((f"3 ... with a {r['big_tasks']:,}-task history",
                     f"{r['load_big_ratio']:.2f}x, +{r['load_big_over_bare_ms']:.0f} ms (in-process "
                     f"{r['load_big_inprocess_ms']:.0f} ms)", f"bare {r['bare_ms']:.0f} ms", "<= 1.10x",
                     _ok(r["load_big_ratio"] <= 1.10)))
        rows.append(("3 import imagen4_jupyter imports ipywidgets", "yes" if r["ipywidgets_on_import"] else "no",
                     "", "no", _ok(not r["ipywidgets_on_import"])))
    if 4 in results:
        r = results[4]
        for key, label, goal in (("lookup", "reuse lookup", 5), ("render", "%imagen4 history page", 200),
                                 ("unfinished", "unfinished scan", 100)):
            d = r[key]
            rows.append((f"4 {label} ({r['tasks']:,} tasks)", f"warm {d['warm']:.2f} ms, cold {d['cold']:.0f} ms",
                         f"naive {d['naive']:.0f} ms (first ever {d['first']:.0f} ms)", f"<= {goal} ms",
                         _ok(d["warm"] <= goal) + ("" if d["cold"] <= goal else " warm; cold over")))
    if 5 in results:
        r = results[5]
        for row in r["rows"]:
            per = row["bytes"] / r["images"] / 1e3
            default = row["mode"].startswith("preview")
            rows.append((f"5 per image, {row['source']} images, {row['mode']}", f"{per:.0f} KB",
                         f"original PNG {row['original_bytes'] / 1e3:.0f} KB", "<= 300 KB" if default else "",
                         _ok(per <= 300) if default else ""))
    if 6 in results:
        r = results[6]
        b, u = r["batch"], r["unpaced"]
        ratio = b["wall"] / r["ideal"]
        base = f"ideal {r['ideal']:.1f} s"
        if u is not None:
            base += f"; pacing off {u['wall'] / r['ideal']:.2f}x, {u['429']} x 429, {u['lost']} lost"
        rows.append((f"6 batch of {r['tasks']}, both limits", f"{b['wall']:.1f} s = {ratio:.2f}x ideal, "
                     f"{b['429']} x 429, {b['lost']} lost", base, "<= 1.10x, 0 x 429, 0 lost",
                     _ok(ratio <= 1.10 and b["429"] == 0 and b["lost"] == 0 and b["created"] == r["tasks"])))
    if 7 in results:
        c = results[7]["callbacks"]
        goal = results[7]["goal_s"]
        base = f"round trip {c['rtt_median'] * 1000:.1f} ms"
        if 1 in results and 10 in results[1]["results"]["smart"]:
            base += f"; polling (fig. 1, ours, 10 in flight) {results[1]['results']['smart'][10]['lag_median']:.2f} s"
        rows.append(("7 callback mode: median lag", f"{c['lag_median'] * 1000:.1f} ms (p90 {c['lag_p90'] * 1000:.1f})",
                     base, f"<= 50 ms + round trip = {goal * 1000:.0f} ms", _ok(c["lag_median"] <= goal)))
        rows.append(("7 callback mode: status requests per task", f"{c['requests_per_task']:.2f}",
                     f"{c['hinted']}/{c['tasks']} hinted", "<= 2", _ok(c["requests_per_task"] <= 2)))
    if 8 in results:
        r = results[8]
        f = r["figures"]
        rows.append((f"8 soak of {f['tasks']:,} tasks, {f['fault rate']:.0%} faults (seed {f['seed']})",
                     f"{f['batch wall s']:.0f} s, {f['faults injected']} faults, "
                     f"{sum(f['429 answers'].values())} x 429, {f['lost']} lost, {f['duplicates']} duplicated",
                     f"ideal {f['ideal s (createTask limit)']:.0f} s (the createTask limit)", "0 lost, 0 duplicated",
                     _ok(r["ok"])))
    return rows


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small and fast: checks the benchmarks still work")
    ap.add_argument("--only", default="", help="comma-separated figure numbers (default: all)")
    args = ap.parse_args(argv)
    import importlib

    wanted = [int(x) for x in args.only.split(",") if x.strip()] or list(FIGURES)
    print(f"imagen4-jupyter benchmarks{' (quick)' if args.quick else ''}: {machine()}", flush=True)
    results, seconds = {}, {}
    for number in wanted:
        title, module = FIGURES[number]
        print(f"\n=== Figure {number}: {title} ===", flush=True)
        t = time.perf_counter()
        mod = importlib.import_module(f"benchmarks.{module}")
        results[number] = mod.main(["--quick"] if args.quick else [])
        seconds[number] = time.perf_counter() - t
        print(f"(figure {number} took {seconds[number]:.0f} s)", flush=True)
    rows = summary(results)
    widths = [max(len(r[i]) for r in rows + [("figure", "ours", "baseline (same run)", "goal", "met")])
              for i in range(5)]
    print("\n=== Summary ===")
    header = ("figure", "ours", "baseline (same run)", "goal", "met")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\nfigures printed: {', '.join(str(n) for n in results)}; total {sum(seconds.values()):.0f} s; "
          f"load average now {os.getloadavg()[0]:.2f}")
    return results


if __name__ == "__main__":
    main()
