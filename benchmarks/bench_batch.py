"""Figure 6: the 200-task batch under both documented limits: wall time against the ideal, and 429 answers.

The simulator enforces the documented limits (createTask 20 per 10 s per account, recordInfo 10 per 1 s per
key); the client paces itself under the same limits (`Limits`). Everything is time-scaled by --scale (default
0.5, so the full run takes about a minute): both limits' windows and the simulator's times (figure 1's tasks:
queue 0-9 s, generation 9-11 s), all multiplied by the same factor; figures are reported back in real seconds.

`generate_many` runs with --concurrency (default 40: 2 tasks per second times the longest task, 20 s, so
the concurrency limit is not what binds) and the library's default schedule (`SmartSchedule`, scaled), with
a history (a `Session`). Ideal = 200 tasks at 2 per second (the create limit's rate) plus one generation time
(the mean one measured on the simulator). Baseline from the same run: the same batch with the client's pacing
switched off (`Limits.off()`), relying on retries after each 429.
429s are counted by the simulator (`sim.count_429()`); lost = items without a stored result.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imagen4_jupyter import Imagen4Client, RetryPolicy
from imagen4_jupyter.api.pacing import Limits
from imagen4_jupyter.api.schedules import SmartSchedule
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

KEY = "bench-key"
CREATE, QUERY = (20, 10.0), (10, 1.0)  # the documented limits, unscaled
QUEUE, GEN = (0.0, 9.0), (9.0, 11.0)


def _scaled(spec: tuple[float, float], scale: float) -> tuple:
    return spec[0] * scale, spec[1] * scale


def run_batch(tasks: int, concurrency: int, scale: float, paced: bool) -> dict:
    from imagen4_jupyter import generate_many

    create, query = (CREATE[0], CREATE[1] * scale), (QUERY[0], QUERY[1] * scale)
    with Simulator(api_keys=(KEY,), queue_time=_scaled(QUEUE, scale), generation_time=_scaled(GEN, scale),
                   image_scale=0.0625, random_seed=2, create_limit=create, query_limit=query) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        limits = Limits(create=create, query=query) if paced else Limits.off()
        client = Imagen4Client(KEY, sim.url, schedule=SmartSchedule().scaled(scale), retry=RetryPolicy(),
                               cache_dir=Path(tmp) / "images", max_workers=3, limits=limits)
        session = Session(client=client, history=History(Path(tmp) / "history.jsonl"))
        prompts = [f"batch benchmark, item {i}" for i in range(tasks)]
        t = time.perf_counter()
        try:
            result = generate_many(prompts, session=session, concurrency=concurrency, progress=False)
        finally:
            wall = time.perf_counter() - t
            session.close()
        ok = sum(1 for item in result if item.images and all(Path(im.path).exists() for im in item.images))
        gens = [t.generation_duration for t in sim.tasks.values()]
        return {"wall": wall / scale, "429": sim.count_429(), "429_create": sim.count_429("createTask"),
                "429_query": sim.count_429("recordInfo"), "ok": ok, "lost": tasks - ok, "created": len(sim.tasks),
                "requests": sim.count("createTask") + sim.count("recordInfo"),
                "status_per_task": sim.count("recordInfo") / max(1, tasks),
                "mean_generation": sum(gens) / max(1, len(gens)) / scale,
                "max_create_window": sim.max_in_window("createTask", create[1]),
                "max_query_window": sim.max_in_window("recordInfo", query[1]), "stats": dict(result.stats)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=40)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--no-baseline", action="store_true", help="skip the unpaced run (--quick skips it too)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    tasks, scale = (40, 0.1) if args.quick else (args.tasks, args.scale)
    batch = run_batch(tasks, args.concurrency, scale, paced=True)
    unpaced = None if (args.no_baseline or args.quick) else run_batch(tasks, args.concurrency, scale, paced=False)
    rate = CREATE[0] / CREATE[1]
    ideal = tasks / rate + batch["mean_generation"]
    print(f"Batch under both documented limits: {tasks} tasks of 9-20 s, concurrency {args.concurrency}, time scale "
          f"{scale} (limits and simulator times); figures in real seconds")
    print(f"ideal: {ideal:.1f} s = {tasks} tasks at {rate:g} per second + one generation time "
          f"({batch['mean_generation']:.1f} s, the simulator's mean)")
    print(f"{'run':34} {'wall':>8} {'vs ideal':>9} {'429s':>6} {'(create/query)':>15} {'status/task':>12} "
          f"{'max create/10 s':>16} {'max query/1 s':>14} {'stored':>7} {'lost':>5}")
    rows = [("generate_many, client pacing", batch)] + ([("baseline: pacing off", unpaced)] if unpaced else [])
    for label, r in rows:
        print(f"{label:34} {r['wall']:7.1f}s {r['wall'] / ideal:8.2f}x {r['429']:6d} "
              f"{r['429_create']:>7d}/{r['429_query']:<7d} {r['status_per_task']:12.1f} {r['max_create_window']:16d} "
              f"{r['max_query_window']:14d} {r['ok']:7d} {r['lost']:5d}")
    s = batch["stats"]
    print(f"generate_many stats (paced): max in flight {s.get('max_in_flight')}, createTask 429s "
          f"{s.get('rate_limited')}, pauses {s.get('pauses')} ({s.get('paused_s', 0):.1f} s)")
    return {"tasks": tasks, "ideal": ideal, "batch": batch, "unpaced": unpaced, "concurrency": args.concurrency,
            "scale": scale}


if __name__ == "__main__":
    main()
