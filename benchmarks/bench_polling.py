"""Figure 1: completion-to-stored lag and status requests per task under the documented query budget, at 1, 10
and 30 tasks in flight, three schedules side by side.

Tasks take 9-20 s on the simulator (queue 0-9 s, varying with load; generation 9-11 s, steady). Everything
is time-scaled by --scale (default 0.2): the simulator's times AND both documented limits (createTask 20 per
10 s, recordInfo 10 per 1 s become 20 per 10*s and 10 per 1*s), enforced by the simulator and paced by the
client (`Limits` with the same scaled windows); figures are reported back in real seconds (divided by s).

"N in flight" is a closed loop: N tasks are started (0.5 s apart, scaled) and each one that finishes is
replaced by a new one until --tasks-per-level tasks have run. Lag is the time from the task's completion at
the simulator (its completeTime) to its images stored on the client (`job.finished_at`). Requests per task =
recordInfo requests the simulator received at that level / tasks.

Schedules, all under the same budget: ours (`SmartSchedule`, the library's default, warmed up with 6 tasks
so it has learned durations, as a notebook with a history has), the provider's advised schedule
(`PollSchedule()`: every 2.5 s for 30 s, then 7.5 s, then 22.5 s) and fixed 0.5 s polling, both scaled.
"""
from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time

from imagen4_jupyter import Imagen4Client, PollSchedule
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.api.schedules import SmartSchedule
from imagen4_jupyter.simulator import Simulator

KEY = "bench-key"
LEVELS = (1, 10, 30)
TASKS = {1: 8, 10: 30, 30: 60}  # tasks run per level (full run)
QUICK_TASKS = {1: 2, 10: 10, 30: 30}
WARMUP = 6


def scaled_limits(scale: float) -> tuple[tuple[int, float], tuple[int, float]]:
    """(createTask, recordInfo) limits with their windows multiplied by `scale`."""
    return (20, 10.0 * scale), (10, 1.0 * scale)


def closed_loop(client: Imagen4Client, in_flight: int, total: int, scale: float, tag: str) -> list:
    """Keep `in_flight` tasks running until `total` have finished; returns the jobs."""
    finished: queue.Queue = queue.Queue()
    jobs = []

    def start(i: int) -> None:
        job = client.submit(f"{tag} prompt {i}", seed=i)
        job.add_done_callback(finished.put)
        jobs.append(job)

    started = 0
    for _ in range(min(in_flight, total)):
        start(started)
        started += 1
        time.sleep(0.5 * scale)  # staggered arrivals, as cells run one after another
    for _ in range(total):
        finished.get(timeout=600 * scale + 60)
        if started < total:
            start(started)
            started += 1
    return jobs


def run_schedule(name: str, schedule, scale: float, tasks: dict[int, int], seed: int, warmup: int = 0) -> dict:
    """One simulator and client for one schedule; every level in turn. Returns {level: figures}."""
    create, query = scaled_limits(scale)
    out = {}
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 9.0 * scale), generation_time=(9.0 * scale, 11.0 * scale),
                   image_scale=0.0625, random_seed=seed, create_limit=create, query_limit=query) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        client = Imagen4Client(KEY, sim.url, schedule=schedule, cache_dir=tmp, max_workers=3,
                               limits=Limits(create=create, query=query))
        try:
            if warmup:
                closed_loop(client, warmup, warmup, scale, f"{name} warm-up")
            for level in tasks:
                sim.reset_counts()
                t = time.perf_counter()
                jobs = closed_loop(client, level, tasks[level], scale, f"{name} {level}")
                wall = time.perf_counter() - t
                ok = [j for j in jobs if j.error is None and j.record is not None and j.record.complete_time_ms]
                lags = [(j.finished_at - j.record.complete_time_ms / 1000.0) / scale for j in ok]
                out[level] = {"lag_median": statistics.median(lags) if lags else float("nan"),
                              "lag_p90": _q(lags, 0.9) if lags else float("nan"),
                              "requests_per_task": sim.count("recordInfo") / max(1, len(jobs)),
                              "tasks": len(jobs), "failed": len(jobs) - len(ok), "wall": wall,
                              "429": sim.count_429(),
                              "max_query_window": sim.max_in_window("recordInfo", query[1]),
                              "max_create_window": sim.max_in_window("createTask", create[1])}
        finally:
            client.close()
    return out


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--quick", action="store_true", help="a few tasks, to check it still works")
    args = ap.parse_args(argv)
    scale, tasks = (0.05, QUICK_TASKS) if args.quick else (args.scale, TASKS)
    schedules = (("advised", "provider's advice (baseline)", PollSchedule().scaled(scale), 0),
                 ("fixed", "fixed 0.5 s", PollSchedule.fixed(0.5 * scale), 0),
                 ("smart", "ours: smart (learned)", SmartSchedule().scaled(scale), WARMUP))
    results = {key: run_schedule(key, sched, scale, tasks, seed=1, warmup=warm) for key, _, sched, warm in schedules}
    create, query = scaled_limits(scale)
    print(f"Polling under the documented query budget: tasks of 9-20 s, time scale {scale} (simulator times and "
          f"both limits: createTask {create[0]} per {create[1]:g} s, recordInfo {query[0]} per {query[1]:g} s, "
          "enforced by the simulator, paced by the client); figures in real seconds")
    print(f"{'in flight':>9} {'schedule':30} {'median lag':>11} {'p90 lag':>9} {'requests/task':>14} "
          f"{'lag vs advised':>15} {'429s':>5} {'max q/window':>13}")
    for level in tasks:
        base = results["advised"][level]
        for key, label, _, _ in schedules:
            r = results[key][level]
            print(f"{level:9d} {label:30} {r['lag_median']:10.2f}s {r['lag_p90']:8.2f}s {r['requests_per_task']:14.1f} "
                  f"{r['lag_median'] / base['lag_median']:14.2f}x {r['429']:5d} {r['max_query_window']:13d}"
                  + (f"  ({r['failed']} NOT STORED)" if r["failed"] else ""))
    return {"scale": scale, "levels": list(tasks), "results": results}


if __name__ == "__main__":
    main()
