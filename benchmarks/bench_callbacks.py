"""Figure 7: callback mode: completion-to-stored lag and status requests per task when the service calls back.

Real times, documented limits (the simulator enforces them, the client paces). Each task is created with its
own `callBackUrl` from an `api.callbacks.CallbackReceiver` on loopback; the simulator POSTs the finished task
there at its completion time, signed with a webhook key; the receiver checks the signature and turns the POST
into a hint, and the hint into `client.poller.poke(task_id)`: one status check at once (the callback body is
never taken as the result), then the download. The polling schedule is only a safety net (one check every
30 s), so without the callback a task's lag would be up to 30 s.

Baseline from the same run: one recordInfo round trip on loopback (the median of plain `client.get_task`
calls, paced under the query limit); the summary also shows figure 1's polling lag (ours, 10 in flight) when
both run. Lag = the simulator's completeTime to the job's images stored.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

from imagen4_jupyter import Imagen4Client, PollSchedule
from imagen4_jupyter.api.callbacks import CallbackReceiver, Hint
from imagen4_jupyter.simulator import Simulator

KEY = "bench-key"
WEBHOOK_KEY = "bench-webhook-key"
QUEUE, GEN = (0.0, 1.0), (1.0, 2.0)
SAFETY_NET = 30.0  # seconds between status checks while waiting for a callback


def _sim() -> Simulator:
    return Simulator(api_keys=(KEY,), queue_time=QUEUE, generation_time=GEN, image_scale=0.0625, random_seed=7,
                     webhook_key=WEBHOOK_KEY)


def _lags(jobs: list) -> list[float]:
    return [j.finished_at - j.record.complete_time_ms / 1000.0 for j in jobs
            if j.error is None and j.record is not None and j.record.complete_time_ms]


def run_callbacks(tasks: int, spacing: float) -> dict:
    hints: dict[str, float] = {}
    lock = threading.Lock()
    with _sim() as sim, tempfile.TemporaryDirectory() as tmp:
        client = Imagen4Client(KEY, sim.url, schedule=PollSchedule.fixed(SAFETY_NET), cache_dir=tmp, max_workers=3)

        def on_hint(hint: Hint) -> None:
            with lock:
                hints.setdefault(hint.task_id, time.time())
            client.poller.poke(hint.task_id)

        receiver = CallbackReceiver("http://127.0.0.1", on_hint, webhook_key=WEBHOOK_KEY).start()
        host, port = receiver.address
        receiver.public_url = f"http://{host}:{port}/hook"
        try:
            jobs = []
            for i in range(tasks):
                url, _token = receiver.new_url(f"callback benchmark {i}")
                jobs.append(client.submit(f"callback benchmark {i}", seed=i, callback_url=url))
                time.sleep(spacing)
            for job in jobs:
                job.wait(SAFETY_NET * 3)
            status_requests = sim.count("recordInfo")
            done = [j for j in jobs if j.error is None and j.record is not None]
            to_hint = [hints[j.task_id] - j.record.complete_time_ms / 1000.0 for j in done if j.task_id in hints]
            # the baseline round trip: plain status checks of finished tasks, on the same client and budget
            rtts = []
            for job in done[:20]:
                t = time.perf_counter()
                client.get_task(job.task_id)
                rtts.append(time.perf_counter() - t)
            lags = _lags(jobs)
            return {"tasks": tasks, "lag_median": statistics.median(lags), "lag_p90": _q(lags, 0.9),
                    "lag_max": max(lags), "to_hint_median": statistics.median(to_hint) if to_hint else float("nan"),
                    "hinted": len(hints), "requests_per_task": status_requests / tasks,
                    "failed": tasks - len(lags), "rtt_median": statistics.median(rtts),
                    "refused": dict(receiver.refused), "429": sim.count_429()}
        finally:
            receiver.stop()
            client.close()


def _q(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    tasks = 5 if args.quick else args.tasks
    spacing = 0.5  # 2 tasks per second: the create limit's rate
    cb = run_callbacks(tasks, spacing)
    goal = 0.050 + cb["rtt_median"]
    print(f"Callback mode: {tasks} tasks of {QUEUE[0] + GEN[0]:g}-{QUEUE[1] + GEN[1]:g} s, documented limits, "
          f"signed callbacks to a CallbackReceiver on loopback -> poller.poke(task_id); safety-net polling every "
          f"{SAFETY_NET:g} s")
    print(f"{'mode':40} {'median lag':>11} {'p90 lag':>9} {'status req/task':>16} {'429s':>5}")
    print(f"{'callbacks (ours)':40} {cb['lag_median'] * 1000:9.1f}ms {cb['lag_p90'] * 1000:7.1f}ms "
          f"{cb['requests_per_task']:16.2f} {cb['429']:5d}")
    print(f"one recordInfo round trip (baseline): {cb['rtt_median'] * 1000:.1f} ms median; goal: median lag <= 50 ms "
          f"+ one round trip = {goal * 1000:.1f} ms, <= 2 status requests per task")
    print(f"completion -> hint received: {cb['to_hint_median'] * 1000:.1f} ms median; {cb['hinted']}/{tasks} tasks "
          f"hinted; max lag {cb['lag_max'] * 1000:.1f} ms; receiver refused {cb['refused'] or 'nothing'}"
          + (f"; {cb['failed']} NOT STORED" if cb["failed"] else ""))
    return {"callbacks": cb, "goal_s": goal}


if __name__ == "__main__":
    main()
