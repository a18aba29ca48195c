"""Figure 1: completion-to-displayed lag and status requests per task, three schedules side by side.

Tasks take 9-20 s on the simulator (queue 0-9 s, varying with load; generation 9-11 s, steady), run
with every time scaled by --scale (default 0.2) and reported back in real seconds. Lag is the time from
the simulator's completion to the job's images being stored (when a display update would fire).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from imagen4_jupyter import Imagen4Client, PollSchedule
from imagen4_jupyter.api.schedules import SmartSchedule
from imagen4_jupyter.simulator import Simulator

KEY = "bench-key"


def run(schedule, tasks: int, scale: float, warmup: int = 0, seed: int = 1) -> dict:
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 9.0 * scale), generation_time=(9.0 * scale, 11.0 * scale),
                   image_scale=0.0625, random_seed=seed) as sim, tempfile.TemporaryDirectory() as tmp:
        client = Imagen4Client(KEY, sim.url, schedule=schedule, cache_dir=tmp, max_workers=3)
        try:
            if warmup:
                for job in [client.submit(f"warm-up {i}") for i in range(warmup)]:
                    job.wait(120)
                sim.reset_counts()
            jobs = []
            for i in range(tasks):
                jobs.append(client.submit(f"benchmark prompt {i}", seed=i))
                time.sleep(0.5 * scale)  # staggered arrivals
            for job in jobs:
                job.wait(300)
            lags = [job.finished_at - job.record.complete_time_ms / 1000.0 for job in jobs]
            return {"lag_median": statistics.median(lags) / scale, "lag_p90": _q(lags, 0.9) / scale,
                    "requests_per_task": sim.count("recordInfo") / tasks}
        finally:
            client.close()


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--quick", action="store_true", help="a few tasks, to check it still works")
    args = ap.parse_args(argv)
    tasks, scale = (6, 0.05) if args.quick else (args.tasks, args.scale)
    advised = PollSchedule().scaled(scale)
    smart = SmartSchedule().scaled(scale)  # the library's default, time-scaled like everything else
    rows = [
        {"schedule": "provider's advice (baseline)", **run(advised, tasks, scale)},
        {"schedule": "fixed 0.5 s", **run(PollSchedule.fixed(0.5 * scale), tasks, scale)},
        {"schedule": "smart (learned)", **run(smart, tasks, scale, warmup=6)},
    ]
    base = rows[0]
    print(f"Polling: {tasks} tasks of 9-20 s (time scale {scale}), figures in real seconds")
    print(f"{'schedule':32} {'median lag':>11} {'p90 lag':>9} {'requests/task':>14} {'lag vs baseline':>16}")
    for r in rows:
        print(f"{r['schedule']:32} {r['lag_median']:10.2f}s {r['lag_p90']:8.2f}s {r['requests_per_task']:14.1f} "
              f"{r['lag_median'] / base['lag_median']:15.2f}x")
    return rows


if __name__ == "__main__":
    main()
