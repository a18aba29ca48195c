"""Soak: 1,000 tasks through a `Session` and `generate_many` under the documented limits, with random faults.

    python -m benchmarks.soak [--tasks N] [--quick] [--seed S] [--fault-rate P] [--concurrency C]

The simulator runs with its documented limits ON (20 createTask per 10 s per account, 10 recordInfo per s
per key) and time-scaled tasks (queue 0.1-0.4 s, generation 0.6-1.2 s times the model's speed; the
realistic shape scaled by 0.1, the client's default schedule scaled the same). A random mix of the three
models, ratios, image counts and seeds; every prompt is unique, so one request = one prompt.

Faults: every request to createTask, recordInfo and the image URLs draws, with probability `--fault-rate`
(10 % by default), one fault from the simulator's whole catalogue for that endpoint (`FAULTS` below: every
body code, HTML 5xx pages, drops before and after processing, malformed JSON, truncated answers, redirects,
wrong content types, expired links, slow and trickling answers, and the hostile image bodies). The draws come
from one `random.Random(seed)`; the seed is printed (the threads' timing decides which request meets which
draw, so a rerun with the same seed gives the same items and fault sequence, not the same pairing).

A batch that stops (a 401/402/505 on createTask stops the whole batch: every other item would get the same
answer) is continued with its never-sent items only, as a user who fixed the key would (a "round"). Then,
faults off, `session.resume()` follows every task the history still calls unfinished. The checks:

* no hang: every `generate_many` ends by itself (one that sends nothing for STALL_S seconds while it still
  "submits" is stopped, written down as a hang, and its unsent items go to the next round);
* 0 lost: every item ends succeeded, failed with a named error, or "outcome unknown"; every task the
  simulator created is known to the history, or its createTask got no answer and the history says so;
* 0 created twice: no request (prompt) made the simulator create more than one task, no task id submitted
  twice in the history, no two items on one task;
* every failure is named: with "(task <id>)" in its message when a task exists; an outcome unknown with its
  request and the batch index in the history's `outcome_unknown` event; a refusal only where the simulator
  created nothing for that request;
* the history is complete: each task the simulator created is in it with its final event matching what the
  item says (or is an outcome unknown), each history task exists in the simulator; after the resume nothing
  is left unfinished; the API key appears in no history line and no message.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/soak.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imagen4_jupyter import Imagen4Client, RetryPolicy, generate_many
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.api.request import ASPECT_RATIOS, GenerationRequest
from imagen4_jupyter.api.schedules import SmartSchedule
from imagen4_jupyter.records.history import History
from imagen4_jupyter.records.session import Session
from imagen4_jupyter.simulator import Simulator
from imagen4_jupyter.simulator.faults import CODE_MESSAGES, KINDS, Fault, make_fault

KEY = "soak-key-5Jq8Wd2Np7Xc"  # never printed
SCALE = 0.1  # task times and the client's schedule: the realistic ones times this
QUEUE, GENERATION = (1.0 * SCALE, 4.0 * SCALE), (6.0 * SCALE, 12.0 * SCALE)
READ_TIMEOUT = 3.0
SLOW, LATE = 0.5, READ_TIMEOUT + 0.5  # a slow answer in time, and one after the client gave up
MAX_DOWNLOAD = 1_000_000
MAX_ROUNDS = 50
ENDPOINTS = ("createTask", "recordInfo", "image")
ENDED = ("success", "fail", "error", "lost-unknown")
STALL_S = 30.0  # a batch that sends nothing for this long (the longest Retry-After is 10 s) hangs

# The catalogue: label -> fault options, per endpoint. `redirect` is filled in per request (same path on
# `localhost`, another host name for the client). Trickle intervals make each answer last ~1-4 s.
_COMMON: dict[str, dict[str, Any]] = {
    **{f"html:{s}": {"http_status": s} for s in (500, 502, 503, 504)},
    f"delay:{SLOW:g}s": {"delay": SLOW}, f"delay:{LATE:g}s": {"delay": LATE},
    "drop": {"drop": True}, "drop_after": {"drop_after": True}, "malformed": {"malformed": True},
    "truncate": {"truncate": True}, "redirect": {"redirect": "?"}, "content_type": {"content_type": "text/html"},
    "expired": {"expired": True},
}
_CODES = {f"code:{c}": {"code": c} for c in sorted(CODE_MESSAGES)}
FAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "createTask": {**_CODES, **_COMMON, "trickle": {"trickle": 0.02}},
    "recordInfo": {**_CODES, **_COMMON, "trickle": {"trickle": 0.004}},
    "image": {**_COMMON, "code:500": {"code": 500}, "trickle": {"trickle": 0.0005}, "huge_png": {"huge_png": True},
              "mislabeled": {"mislabeled": True}, "oversize": {"oversize": MAX_DOWNLOAD + 1}},
}


def catalogue_gaps() -> list[str]:
    """Fault kinds of the simulator the catalogue never draws (empty: the whole catalogue is covered)."""
    drawn = {k for table in FAULTS.values() for opts in table.values() for k in opts if k in KINDS}
    drawn |= {"html"} if any("http_status" in o for t in FAULTS.values() for o in t.values()) else set()
    codes = {o["code"] for t in FAULTS.values() for o in t.values() if "code" in o}
    return sorted(set(KINDS) - drawn) + [f"code {c}" for c in sorted(set(CODE_MESSAGES) - codes)]


class FaultySimulator(Simulator):
    """The simulator with random faults: each request draws one with probability `rate` (while `injecting`)."""

    def __init__(self, *, rate: float, seed: int, catalogue: dict[str, dict[str, dict[str, Any]]], **kw: Any) -> None:
        super().__init__(**kw)
        self.rate = rate
        self.catalogue = catalogue
        self.injecting = True
        self.injected: Counter[str] = Counter()  # "endpoint label" -> count
        self.draws = random.Random(seed)
        self.draw_lock = threading.Lock()
        self.current = threading.local()  # the request this handler thread is answering

    def record_request(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                       body: bytes | None, endpoint: str) -> None:
        super().record_request(method, path, query, headers, body, endpoint)
        self.current.path, self.current.query = path, query

    def take_fault(self, endpoint: str) -> Fault | None:
        fault = super().take_fault(endpoint)
        if fault is not None or not self.injecting or endpoint not in self.catalogue:
            return fault
        with self.draw_lock:
            if self.draws.random() >= self.rate:
                return None
            label = self.draws.choice(sorted(self.catalogue[endpoint]))
            self.injected[f"{endpoint} {label}"] += 1
        options = dict(self.catalogue[endpoint][label])
        if "redirect" in options:
            query = "&".join(f"{k}={v}" for k, v in getattr(self.current, "query", {}).items())
            options["redirect"] = (self.url.replace("127.0.0.1", "localhost") + getattr(self.current, "path", "/")
                                   + (f"?{query}" if query else ""))
        return make_fault(endpoint, 1, options)


def build_requests(n: int, seed: int) -> list[GenerationRequest]:
    """`n` unique requests: the three models, every ratio, 1-4 images, half of them seeded."""
    rng = random.Random(seed)
    subjects = ("a lighthouse", "a fox", "a tram", "an orchard", "a glacier", "a market", "a violin", "a kite")
    out = []
    for i in range(n):
        model = rng.choices(("standard", "fast", "ultra"), weights=(5, 4, 2))[0]
        images = 1 if model == "ultra" else rng.choice((1, 1, 1, 2, 4))
        out.append(GenerationRequest.create(f"soak {seed}, item {i}: {rng.choice(subjects)} at dusk", model=model,
                                            aspect_ratio=rng.choice(ASPECT_RATIOS), num_images=images,
                                            seed=rng.randrange(1, 10**6) if rng.random() < 0.5 else None))
    return out


def run(tasks: int, seed: int, rate: float, concurrency: int, folder: Path, guard: float,
        catalogue: dict[str, dict[str, dict[str, Any]]] = FAULTS) -> dict[str, Any]:
    """One soak in `folder` (its history and images), ended after `guard` seconds whatever happens (what is
    still running then is lost); returns the figures, the outcomes and the checks."""
    requests = build_requests(tasks, seed)
    with FaultySimulator(rate=rate, seed=seed, catalogue=catalogue, api_keys=(KEY,), queue_time=QUEUE,
                         generation_time=GENERATION, image_scale=0.0625, random_seed=seed) as sim:
        client = Imagen4Client(api_key=KEY, base_url=sim.url, schedule=SmartSchedule().scaled(SCALE),
                               retry=RetryPolicy(base=0.1, cap=2.0), cache_dir=folder / "images",
                               timeout=(2.0, READ_TIMEOUT), max_download_bytes=MAX_DOWNLOAD)
        session = Session(client=client, history=History(folder / "soak.jsonl"))
        items: dict[int, Any] = {}
        hangs: list[str] = []
        t0 = time.monotonic()
        deadline = t0 + guard
        try:
            todo, rounds = list(range(tasks)), 0
            while todo and rounds < MAX_ROUNDS and time.monotonic() < deadline:
                result = run_round([requests[i] for i in todo], todo, session, sim, concurrency,
                                   f"soak-{seed}-round-{rounds}", deadline, hangs)
                rounds += 1
                for index, item in zip(todo, result, strict=True):
                    items[index] = item
                todo = [i for i in todo if items[i].state == "not-submitted"]
            _wait_all(session, deadline)
            batch_s = time.monotonic() - t0
            sim.injecting = False
            counts = {"createTask": sim.count("createTask"), "recordInfo": sim.count("recordInfo"),
                      "image": sim.count("image")}
            windows = (sim.max_in_window("createTask", 10.0), sim.max_in_window("recordInfo", 1.0))
            throttled = {e: sim.count_429(e) for e in ("createTask", "recordInfo")}
            resumable = session.history.unfinished()
            resumed = session.resume()
            recovered = sum(1 for job in resumed if _settles(job, deadline) and job.error is None)
            _wait_all(session, deadline)
            wall = time.monotonic() - t0
            report = check(sim, session, requests, items)
            report["problems"]["hangs"] = hangs
            report["ok"] = report["ok"] and not hangs
        finally:
            session.close()
        outcomes = Counter(items[i].state if i in items else "never dispatched" for i in range(tasks))
        report["figures"] = {
            "seed": seed, "tasks": tasks, "fault rate": rate, "concurrency": concurrency, "rounds": rounds,
            "outcomes": dict(outcomes), "batch hangs": len(hangs), "tasks created": len(sim.tasks),
            "faults injected": sum(sim.injected.values()), "faults by kind": dict(sorted(sim.injected.items())),
            "batch wall s": round(batch_s, 1), "wall s (with resume)": round(wall, 1),
            "ideal s (createTask limit)": round(max(0, tasks - 20) / 2.0, 1),
            "requests": counts, "429 answers": throttled, "max createTask in 10 s": windows[0],
            "max recordInfo in 1 s": windows[1], "resumable after the batch": len(resumable),
            "recovered by resume": recovered, "credits charged": sum(c.credits for c in sim.charges),
            **report["counts"]}
    return report


def run_round(requests: list[GenerationRequest], indices: list[int], session: Session, sim: Simulator,
              concurrency: int, name: str, deadline: float, hangs: list[str]) -> Any:
    """One `generate_many`; if it is still submitting after STALL_S seconds without a single request reaching the
    simulator (no createTask, no status check, no download began), it hangs: that is written in
    `hangs` and the batch is stopped, so its unsent items go to the next round as a user's rerun would."""
    result = generate_many(requests, session=session, concurrency=concurrency, progress=False, name=name,
                           timeout=max(1.0, deadline - time.monotonic()), wait=False)
    seen, quiet_since = sim.count(), time.monotonic()
    while result.submitting:
        time.sleep(0.25)
        now, count = time.monotonic(), sim.count()
        if count != seen:
            seen, quiet_since = count, now
        elif now - quiet_since >= STALL_S:
            stuck = [f"item {indices[i.index]} {i.state}" for i in result if not i.done]
            hangs.append(f"{name}: generate_many still submitting {now - quiet_since:.0f} s after the last request "
                         f"began; unfinished: {', '.join(stuck)}; stats {result.stats}")
            result.stop("not sent: the soak stopped a hung batch")
            break
    try:
        result.wait(max(0.1, deadline - time.monotonic()))
    except E.Imagen4TimeoutError:
        pass
    return result


def _settles(job: Any, deadline: float) -> bool:
    try:
        job.result(max(0.1, deadline - time.monotonic()))
    except Exception:  # noqa: BLE001 - the job's error is looked at by the caller
        pass
    return job.done()


def _wait_all(session: Session, deadline: float) -> None:
    """Until every job of the session has settled, or the soak's time limit (what is left is counted lost)."""
    try:
        session.wait_all(timeout=max(0.1, deadline - time.monotonic()))
    except E.Imagen4TimeoutError:
        pass


def check(sim: Simulator, session: Session, requests: list[GenerationRequest], items: dict[int, Any]) -> dict:
    """The soak's books: every check's problems (an empty list passes) and the counts behind them."""
    history = session.history
    history.refresh()
    events = list(history.iter_events())
    by_key = {r.key(): i for i, r in enumerate(requests)}
    sim_tasks = sim.tasks
    sim_keys = {tid: GenerationRequest.from_payload(t.param).key() for tid, t in sim_tasks.items()}
    unknown_keys = Counter(e.get("request_key") for e in events if e.get("event") == "outcome_unknown")
    submitted = Counter(e.get("task_id") for e in events if e.get("event") == "submitted")
    problems: dict[str, list[str]] = {"lost": [], "duplicates": [], "named": [], "history": [], "secret": []}

    for index in range(len(requests)):  # every item ended, as one of the four
        item = items.get(index)
        if item is None or item.state not in ENDED:
            problems["lost"].append(f"item {index}: {item.state if item else 'never dispatched'}")
        elif item.state == "success" and not (item.images and all(Path(p).exists() for p in item.paths)):
            problems["lost"].append(f"item {index}: success without its image files (task {item.task_id})")
    never_known = [tid for tid in sim_keys if history.tasks.get(tid) is None]
    for tid in never_known:  # created, the id never reached the client: only if its createTask got no answer
        if not unknown_keys.get(sim_keys[tid]):
            problems["lost"].append(f"{tid}: created, not in the history, no outcome_unknown for its request")

    for key, n in Counter(sim_keys.values()).items():
        if n > 1:
            problems["duplicates"].append(f"item {by_key.get(key)}: {n} tasks created")
    problems["duplicates"] += [f"{tid}: submitted {n} times in the history" for tid, n in submitted.items() if n > 1]
    owners = Counter(it.task_id for it in items.values() if it.task_id)
    problems["duplicates"] += [f"{tid}: {n} items" for tid, n in owners.items() if n > 1]

    created_for = Counter(sim_keys.values())
    for index, item in sorted(items.items()):
        err, tid = item.error, item.task_id
        if item.state == "lost-unknown":
            ok = isinstance(err, E.OutcomeUnknownError) and any(
                e.get("event") == "outcome_unknown" and e.get("request_key") == item.request.key()
                and e.get("request") == item.request.to_dict() and str(err) == e.get("message")
                for e in events)
            if not ok:
                problems["named"].append(f"item {index}: outcome unknown without its request in the history: {err}")
        elif item.state in ("fail", "error"):
            if not isinstance(err, E.Imagen4Error):
                problems["named"].append(f"item {index}: {type(err).__name__}: {err}")
            elif tid and f"(task {tid})" not in str(err):
                problems["named"].append(f"item {index}: the message does not name task {tid}: {err}")
            elif not tid and created_for.get(item.request.key()):
                problems["lost"].append(f"item {index}: told {err.title!r}, but the simulator created a task")
        for text in (str(err or ""), repr(err or ""), str(item.row())):
            if KEY in text:
                problems["secret"].append(f"item {index}: the API key in a message")

    for tid, key in sim_keys.items():  # the history agrees with the items about every known task
        entry = history.tasks.get(tid)
        if entry is None:
            continue
        if entry.request is None:
            problems["history"].append(f"{tid}: no submitted event")
        item = items.get(by_key.get(key, -1))
        if item is None or item.task_id != tid:
            continue
        if item.state == "success" and not entry.succeeded:
            problems["history"].append(f"{tid}: the item succeeded, the history says {entry.state}")
        if item.state in ("fail", "error") and not (entry.succeeded or entry.error):
            problems["history"].append(f"{tid}: the item failed, the history has no final event ({entry.state})")
    problems["history"] += [f"{tid}: in the history, not in the simulator" for tid in history.tasks
                            if tid not in sim_keys]
    problems["history"] += [f"{e.task_id}: still unfinished after the resume ({e.state})" for e in history.unfinished()]
    if KEY.encode() in history.path.read_bytes():
        problems["secret"].append("the API key is in the history file")

    given_up = Counter(e.error.get("kind") for tid, e in history.tasks.items()  # paid, made, and not shown
                       if e.error and e.error.get("final") and not e.succeeded and tid in sim_tasks
                       and sim_tasks[tid].outcome.fail is None)
    counts = {"lost": len(problems["lost"]), "duplicates": len(problems["duplicates"]),
              "created, id never reached the client": len(never_known),
              "failed for good, though the service made the images": dict(given_up),
              "outcome_unknown events": sum(unknown_keys.values()), "history tasks": len(history.tasks)}
    return {"problems": problems, "counts": counts, "ok": not any(problems.values())}


def show(report: dict[str, Any]) -> None:
    f = report["figures"]
    print(f"{'figure':52} value")
    for name, value in f.items():
        if name == "faults by kind":
            continue
        print(f"{name:52} {value}")
    print("faults by kind:")
    for name, n in f["faults by kind"].items():
        print(f"  {name:50} {n}")
    for name, found in report["problems"].items():
        print(f"check {name:46} {'ok' if not found else f'FAILED ({len(found)})'}")
        for line in found[:10]:
            print(f"    {line}")
    print(f"soak {'passed' if report['ok'] else 'FAILED'} (seed {f['seed']}: rerun with --seed {f['seed']})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="40 tasks (about half a minute)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: drawn, and printed)")
    ap.add_argument("--fault-rate", type=float, default=0.10, help="share of requests that meet a fault")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="end the soak after this many seconds (what still runs is lost; default 3x the ideal + 180)")
    ap.add_argument("--stall", action="store_true",
                    help="also draw image answers that trickle one byte a second (they never end in time)")
    args = ap.parse_args(argv)
    tasks = 40 if args.quick else args.tasks
    guard = args.time_limit or 3 * max(0, tasks - 20) / 2.0 + 180
    catalogue = {e: dict(table) for e, table in FAULTS.items()}
    if args.stall:
        catalogue["image"]["trickle:stall"] = {"trickle": True}
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    gaps = catalogue_gaps()
    print(f"Soak: {tasks} tasks, concurrency {args.concurrency}, {args.fault_rate:.0%} of requests meet a random "
          f"fault, documented limits on; seed {seed}" + (f"; NOT drawn: {', '.join(gaps)}" if gaps else ""),
          flush=True)
    with tempfile.TemporaryDirectory(prefix="imagen4-soak-") as tmp:
        report = run(tasks, seed, args.fault_rate, args.concurrency, Path(tmp), guard, catalogue)
    report["catalogue gaps"] = gaps
    show(report)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
