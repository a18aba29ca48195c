"""Figure 6: batch throughput: 200 tasks with a concurrency limit against a rate-limited simulator.

The simulator allows 20 API requests per second per key (createTask and status checks alike; a token
bucket of 20) and answers 429 with Retry-After beyond that. Tasks have figure 1's shape scaled by 0.1 (queue
0-0.9 s, generation 0.9-1.1 s). `generate_many` runs with concurrency 8 and the default (learning) schedule
scaled by 0.1. The ideal is the larger of two lower
bounds: the rate bound (every task needs at least one createTask and one status check: 2 x 200 requests
at 20/s) and the concurrency bound (200 tasks x mean task time / 8). Baseline: the naive loop
(`client.submit` for each prompt, then wait for all), the same client settings and simulator.
429s are counted by the simulator; lost = items without a stored result.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from imagen4_jupyter import Imagen4Client, PollSchedule, RetryPolicy
from imagen4_jupyter.api.schedules import SmartSchedule
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator

KEY = "bench-key"
RATE = 20.0
SCALE = 0.1
QUEUE, GEN = (0.0, 9.0 * SCALE), (9.0 * SCALE, 11.0 * SCALE)


def _count_429(sim: Simulator) -> dict:
    """Count the simulator's 429 answers (its own rate limiter, wrapped in place)."""
    limiter, counts, lock = sim._rate_limiter, {"429": 0}, threading.Lock()
    check = limiter.check

    def counted(key, now_mono=None):
        retry = check(key, now_mono)
        if retry is not None:
            with lock:
                counts["429"] += 1
        return retry

    limiter.check = counted
    return counts


def _client(sim: Simulator, folder: Path) -> Imagen4Client:
    d = SmartSchedule()
    schedule = SmartSchedule(fallback=PollSchedule().scaled(SCALE), queue_interval=d.queue_interval * SCALE,
                             fine=d.fine * SCALE, margin=d.margin * SCALE)
    return Imagen4Client(KEY, sim.url, schedule=schedule, retry=RetryPolicy(), cache_dir=folder / "images",
                         max_workers=3)


def run_batch(tasks: int, concurrency: int) -> dict:
    from imagen4_jupyter import generate_many

    with Simulator(api_keys=(KEY,), queue_time=QUEUE, generation_time=GEN, image_scale=0.0625,
                   rate_limit=(RATE, 1.0), random_seed=2) as sim, tempfile.TemporaryDirectory() as tmp:
        counts = _count_429(sim)
        session = Session(client=_client(sim, Path(tmp)), history=History(Path(tmp) / "history.jsonl"))
        prompts = [f"batch benchmark, item {i}" for i in range(tasks)]
        t = time.perf_counter()
        try:
            result = generate_many(prompts, session=session, concurrency=concurrency, progress=False)
        finally:
            wall = time.perf_counter() - t
            session.close()
        ok = sum(1 for item in result if item.images and all(Path(im.path).exists() for im in item.images))
        durations = [(t.complete_time_ms - t.create_time_ms) / 1000 for t in _finished(sim)]
        return {"wall": wall, "429": counts["429"], "ok": ok, "lost": tasks - ok, "created": len(sim.tasks),
                "requests": sim.count("createTask") + sim.count("recordInfo"), "durations": durations,
                "stats": dict(result.stats)}


def run_naive(tasks: int) -> dict:
    with Simulator(api_keys=(KEY,), queue_time=QUEUE, generation_time=GEN, image_scale=0.0625,
                   rate_limit=(RATE, 1.0), random_seed=2) as sim, tempfile.TemporaryDirectory() as tmp:
        counts = _count_429(sim)
        client = _client(sim, Path(tmp))
        t = time.perf_counter()
        jobs, failed = [], 0
        try:
            for i in range(tasks):
                try:
                    jobs.append(client.submit(f"batch benchmark, item {i}"))
                except Exception:
                    failed += 1
            for job in jobs:
                job.exception(600)
            wall = time.perf_counter() - t
        finally:
            client.close()
        ok = sum(1 for j in jobs if j.error is None and j.images)
        durations = [(t.complete_time_ms - t.create_time_ms) / 1000 for t in _finished(sim)]
        return {"wall": wall, "429": counts["429"], "ok": ok, "lost": tasks - ok, "created": len(sim.tasks),
                "requests": sim.count("createTask") + sim.count("recordInfo"), "durations": durations}


def _finished(sim: Simulator) -> list:
    out = []
    for task in sim.tasks.values():
        data = task.record_data()
        if data.get("completeTime"):
            out.append(type("T", (), {"complete_time_ms": int(data["completeTime"]),
                                      "create_time_ms": int(data["createTime"])}))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    tasks = 20 if args.quick else args.tasks
    batch = run_batch(tasks, args.concurrency)
    naive = run_naive(tasks)
    mean_task = sum(batch["durations"]) / max(1, len(batch["durations"]))
    ideal_rate = 2 * tasks / RATE
    ideal_conc = tasks * mean_task / args.concurrency
    ideal = max(ideal_rate, ideal_conc)
    print(f"Batch throughput: {tasks} tasks of {QUEUE[0] + GEN[0]:.1f}-{QUEUE[1] + GEN[1]:.1f} s (mean "
          f"{mean_task:.2f} s on the service), rate limit {RATE:g} requests/s, concurrency {args.concurrency}")
    print(f"ideal: {ideal:.1f} s (rate bound {ideal_rate:.1f} s, concurrency bound {ideal_conc:.1f} s)")
    print(f"{'run':36} {'wall':>8} {'vs ideal':>9} {'429s':>6} {'requests':>9} {'created':>8} {'stored':>7} "
          f"{'lost':>5}")
    for label, r in (("generate_many, concurrency " + str(args.concurrency), batch),
                     ("naive loop: submit all, wait (baseline)", naive)):
        print(f"{label:36} {r['wall']:7.1f}s {r['wall'] / ideal:8.2f}x {r['429']:6d} {r['requests']:9d} "
              f"{r['created']:8d} {r['ok']:7d} {r['lost']:5d}")
    s = batch["stats"]
    print(f"generate_many stats: max in flight {s.get('max_in_flight')}, createTask 429s {s.get('rate_limited')}, "
          f"pauses {s.get('pauses')} ({s.get('paused_s', 0):.1f} s)")
    return {"tasks": tasks, "ideal": ideal, "batch": batch, "naive": naive, "concurrency": args.concurrency}


if __name__ == "__main__":
    main()
