"""Figure 4: the history at 10,000 tasks: reuse lookup, `%imagen4 history` rendering, unfinished-task scan.

A synthetic history file holds 10,000 tasks written the way `Session` writes them (submitted, state changes,
succeeded with 1-4 stored images / failed; about 1% left unfinished), ~50,000 lines. Image files exist for
every task; the newest 40 tasks have real 1024x1024 PNGs (the simulator's), so the thumbnails of the first
pages cost what they cost in a notebook.

Also the lookup across a `.imagen4/` folder (a duplicated notebook: its own history is empty, the request
succeeded in one of 20 other histories of 10,000 tasks each, or in none), before and after in one run:
  before: every other history loaded as a `History` (from its index) and asked in turn,
  after: `FolderHistories` (records/folder.py): request keys only, cached by (size, mtime) and in `.keys` files;
  first = no `.keys` file yet, cold = a fresh kernel with them on disk, warm = later calls of the same kernel.

Each operation is timed four ways, medians of several repetitions:
  naive (baseline): a full re-parse of the file for every call and no caches (thumbnails decoded each time),
  first: the first call of a fresh kernel before any index or thumbnail cache exists (an old history),
  cold: the first call of a fresh kernel (the history index and the cached thumbnails are on disk),
  warm: later calls of the same kernel (the history is read incrementally; an unchanged file costs a stat).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from imagen4_jupyter.api.request import GenerationRequest
from imagen4_jupyter.records.folder import FolderHistories
from imagen4_jupyter.records.history import History, TaskEntry

WORDS = ("watercolour fox lighthouse harbour mountain city night rain neon garden portrait cat robot forest "
         "desert ocean sunrise winter market library train bridge castle dragon studio film grain soft light "
         "isometric diorama macro photo oil painting sketch").split()
RATIOS = ("1:1", "1:1", "1:1", "16:9", "9:16", "4:3", "3:4")
REAL_IMAGES = 40  # newest tasks with real 1024x1024 PNGs


def _prompt(rng: random.Random, i: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))) + f", study {i}"


def write_history(path: Path, tasks: int, *, image_files: bool = True, seed: int = 7) -> list[GenerationRequest]:
    """Write a realistic history of `tasks` tasks; returns the requests (index = task number)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    images_dir = path.parent / "images"
    t0 = time.time() - tasks * 40.0
    requests, lines = [], []
    real_pngs: list[bytes] = []
    if image_files:
        images_dir.mkdir(exist_ok=True)
        from imagen4_jupyter.simulator.images import image_size, render_png

        real_pngs = [render_png(f"bench-{k}", image_size("1:1"), "history benchmark") for k in range(8)]

    def ev(t: float, **fields) -> None:
        lines.append(json.dumps({"v": 1, "time": round(t, 3), **fields}, ensure_ascii=False,
                                separators=(",", ":")))

    for i in range(tasks):
        req = GenerationRequest.create(
            _prompt(rng, i), negative_prompt=("blurry, text" if rng.random() < 0.3 else None),
            aspect_ratio=rng.choice(RATIOS), num_images=rng.choice((1, 1, 2, 4)),
            seed=(str(rng.randrange(10**6)) if rng.random() < 0.6 else None))
        requests.append(req)
        t = t0 + i * 40.0
        tid = f"task_google_{int(t * 1000)}{i:05d}"
        ev(t, event="submitted", task_id=tid, request=req.to_dict(), request_key=req.key(), cell=i % 60 + 1,
           source=rng.choice(("magic", "magic", "panel", "batch")))
        ev(t + 1.2, event="state", task_id=tid, state="queuing")
        fate = rng.random()
        if fate < 0.01 and i > tasks - 200:  # a handful left unfinished by a kernel restart
            continue
        ev(t + 4.0, event="state", task_id=tid, state="generating")
        if fate < 0.05:
            ev(t + 9.0, event="failed", task_id=tid, kind="GenerationFailedError", code=501,
               message="The service could not generate this image: content policy (failCode 400).", final=True,
               fail_code="400")
            continue
        ev(t + 14.5, event="state", task_id=tid, state="success")
        images = []
        for k in range(req.num_images):
            digest = f"{i:08x}{k:02x}".ljust(64, "0")
            name = f"{digest}.png"
            if image_files:
                data = real_pngs[(i + k) % len(real_pngs)] if i >= tasks - REAL_IMAGES else b"\x89PNG placeholder"
                (images_dir / name).write_bytes(data)
            images.append({"path": f"images/{name}", "sha256": digest, "mime": "image/png", "width": 1024,
                           "height": 1024, "size": 1_400_000, "url": f"https://tempfile.example/{tid}/{k}.png",
                           "index": k})
        create_ms = int(t * 1000)
        ev(t + 15.1, event="succeeded", task_id=tid, urls=[im["url"] for im in images], images=images,
           cost_time_ms=14_000, create_time_ms=create_ms, generating_since_ms=create_ms + 4_000,
           complete_time_ms=create_ms + 14_400)
    path.write_text("\n".join(lines) + "\n")
    return requests


class NaiveHistory(History):
    """The baseline: no index, so every fresh object re-parses the whole log."""

    def _load_index(self, size: int) -> None:
        return None

    def _save_index(self) -> None:
        return None


def _time(fn, reps: int, setup=None) -> float:
    """Median milliseconds of `fn()` over `reps` calls (`setup()` runs untimed before each)."""
    out = []
    for _ in range(reps):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def folder_lookup(tasks: int, histories: int, reps: int) -> dict:
    """Reuse across a folder of `histories` histories of `tasks` tasks: milliseconds per lookup, before/after."""
    tmp = Path(tempfile.mkdtemp(prefix="imagen4-bench-folder-"))
    try:
        folder = tmp / ".imagen4"
        t = time.perf_counter()
        target = folder / "study.jsonl"  # the oldest history holds the request; its image files exist
        write_history(target, tasks)
        os.utime(target, ns=(1, 1))
        for j in range(1, histories):
            write_history(folder / f"study-Copy{j}.jsonl", tasks, image_files=False, seed=100 + j)
        for path in folder.glob("*.jsonl"):
            History(path).refresh()  # each owner's kernel wrote its history index
        build_s = time.perf_counter() - t
        own = folder / "study-Copy99.jsonl"  # the duplicated notebook: nothing in its own history yet
        entry = next(e for e in History(target).entries() if e.succeeded and e.request_key
                     and e.generation_request() and e.generation_request().seed)
        hit, miss = entry.generation_request(), GenerationRequest.create("never asked before", seed="1")

        def no_keys() -> None:
            for p in folder.glob("*.keys"):
                p.unlink()

        def before(request: GenerationRequest, loaded: dict | None = None) -> TaskEntry | None:
            for path in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns, reverse=True):
                if path == own:
                    continue
                h = loaded.setdefault(path, History(path)) if loaded is not None else History(path)
                found = h.find_reusable(request)
                if found is not None:
                    return found
            return None

        assert before(hit).task_id == entry.task_id and before(miss) is None
        out: dict[str, float] = {"build_s": build_s, "histories": histories, "tasks": tasks}
        kept: dict = {}
        before(miss, kept)
        for name, request in (("hit", hit), ("miss", miss)):
            out[f"before_cold_{name}"] = _time(lambda r=request: before(r), max(1, reps // 2))
            out[f"before_warm_{name}"] = _time(lambda r=request: before(r, kept), reps * 4)
            out[f"first_{name}"] = _time(lambda r=request: FolderHistories(folder).find_reusable(r, own=own),
                                         max(1, reps // 2), no_keys)
            FolderHistories(folder).find_reusable(miss, own=own)  # writes the .keys files
            out[f"cold_{name}"] = _time(lambda r=request: FolderHistories(folder).find_reusable(r, own=own), reps)
            warm = FolderHistories(folder)
            assert (warm.find_reusable(request, own=own) is not None) == (name == "hit")
            out[f"warm_{name}"] = _time(lambda r=request, w=warm: w.find_reusable(r, own=own), reps * 4)
        out["keys_mb"] = sum(p.stat().st_size for p in folder.glob("*.keys")) / 1e6
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_folder(f: dict) -> None:
    print(f"\nReuse across a folder: {f['histories']} histories x {f['tasks']:,} tasks, the copy's own history empty "
          f"(built in {f['build_s']:.1f} s; .keys caches {f['keys_mb']:.1f} MB); medians in ms")
    print("  before = each other history loaded as a History (from its index) and asked in turn; after = "
          "FolderHistories\n  (first: no .keys yet; cold: a fresh kernel, .keys on disk; warm: later calls)")
    print(f"{'folder lookup':24} {'before cold':>12} {'before warm':>12} {'first':>9} {'cold':>9} {'warm':>9}")
    for name, label in (("hit", "found (oldest history)"), ("miss", "in no history")):
        print(f"{label:24} {f[f'before_cold_{name}']:10.1f}ms {f[f'before_warm_{name}']:10.2f}ms "
              f"{f[f'first_{name}']:7.1f}ms {f[f'cold_{name}']:7.1f}ms {f[f'warm_{name}']:7.2f}ms")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--histories", type=int, default=20, help="histories in the folder for the cross-notebook lookup")
    ap.add_argument("--folder-tasks", type=int, default=None, help="tasks per history there (default: --tasks)")
    args = ap.parse_args(argv)
    tasks = 1000 if args.quick else args.tasks
    reps_cold, reps_warm = (2, 5) if args.quick else (5, 50)
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display

    from imagen4_jupyter.notebook import magics as M
    from imagen4_jupyter.notebook import outputs as D
    from imagen4_jupyter.records import session as S

    tmp = Path(tempfile.mkdtemp(prefix="imagen4-bench-history-"))
    old_cwd = os.getcwd()
    try:
        path = tmp / ".imagen4" / "history.jsonl"
        index = path.with_name(path.name + ".index")
        thumbs = path.parent / "images" / ".thumbs"
        t = time.perf_counter()
        requests = write_history(path, tasks)
        build_s = time.perf_counter() - t
        size_mb = path.stat().st_size / 1e6
        n_lines = path.read_bytes().count(b"\n")
        rng = random.Random(3)
        seeded = [r for r in requests if r.seed is not None]
        hits = [rng.choice(seeded) for _ in range(20)]
        miss = GenerationRequest.create("never asked before", seed="1")

        def no_index() -> None:
            index.unlink(missing_ok=True)

        def nothing_cached() -> None:
            index.unlink(missing_ok=True)
            shutil.rmtree(thumbs, ignore_errors=True)

        # -- the reuse lookup (what a seeded %%imagen4 cell does first) -----------------------------
        lookup = {"naive": _time(lambda: NaiveHistory(path).find_reusable(rng.choice(hits)), reps_cold),
                  "first": _time(lambda: History(path).find_reusable(rng.choice(hits)), reps_cold, no_index)}
        History(path).refresh()  # writes the index
        lookup["cold"] = _time(lambda: History(path).find_reusable(rng.choice(hits)), reps_cold)
        warm_h = History(path)
        warm_h.refresh()
        found = sum(warm_h.find_reusable(r) is not None for r in hits)
        lookup["warm"] = _time(lambda: (warm_h.find_reusable(rng.choice(hits)), warm_h.find_reusable(miss)),
                               reps_warm) / 2

        # -- %imagen4 history through the real magic (rich output with thumbnails) ------------------
        os.chdir(tmp)
        os.environ.pop("JPY_SESSION_NAME", None)
        os.environ.setdefault("APIKLEY_API_KEY", "bench-key")
        os.environ.setdefault("APIKLEY_BASE_URL", "http://127.0.0.1:9")
        shell = InteractiveShell.instance()
        with contextlib.redirect_stdout(io.StringIO()):
            magics = M.load(shell)
        magics.display_mode = "rich"
        session = magics.session
        assert session.history.path.resolve() == path.resolve(), session.history.path

        def render(line: str = "history") -> None:
            with contextlib.redirect_stdout(io.StringIO()):
                shell.run_line_magic("imagen4", line)

        def render_fresh() -> None:
            session.history = History(path)  # a fresh kernel: nothing parsed yet
            render()

        def render_naive() -> None:
            h = NaiveHistory(path)  # a full re-parse, then the same table with every thumbnail decoded
            with contextlib.redirect_stdout(io.StringIO()):
                display(D.history_bundle(h.search(limit=20), h, thumbnails=True), raw=True)

        rendering = {"naive": _time(render_naive, reps_cold, nothing_cached),
                     "first": _time(render_fresh, reps_cold, nothing_cached)}
        rendering["cold"] = _time(render_fresh, reps_cold)
        render()
        rendering["warm"] = _time(render, max(3, reps_warm // 5))
        rendering["warm_search"] = _time(lambda: render("history --search lighthouse"), max(3, reps_warm // 5))

        # -- scanning for unfinished tasks (what %load_ext and %imagen4 resume do) -------------------
        unfinished_n = len(warm_h.unfinished())
        scan = {"naive": _time(lambda: NaiveHistory(path).unfinished(), reps_cold),
                "first": _time(lambda: History(path).unfinished(), reps_cold, no_index)}
        scan["cold"] = _time(lambda: History(path).unfinished(), reps_cold)
        scan["warm"] = _time(warm_h.unfinished, reps_warm)
        index_mb = index.stat().st_size / 1e6
        M.unload(shell)
        S.set_session(None)
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"History: {tasks:,} tasks, {n_lines:,} lines, {size_mb:.1f} MB log + {index_mb:.1f} MB index (built in "
          f"{build_s:.1f} s); {unfinished_n} unfinished; medians in ms")
    print("  naive = full re-parse per call, no caches (baseline); first = a fresh kernel before any index or "
          "thumbnail exists;\n  cold = a fresh kernel (index and thumbnails on disk); warm = later calls")
    print(f"{'operation':40} {'naive':>9} {'first':>9} {'cold':>9} {'warm':>9} {'goal':>7}")
    rows = [("reuse lookup (find_reusable)", lookup, 5), ("%imagen4 history (newest 20, thumbnails)", rendering, 200),
            ("scan for unfinished tasks", scan, 100)]
    for label, d, goal in rows:
        print(f"{label:40} {d['naive']:7.1f}ms {d['first']:7.1f}ms {d['cold']:7.1f}ms {d['warm']:7.2f}ms "
              f"{goal:5d}ms")
    print(f"{'%imagen4 history --search (warm)':40} {'':>9} {'':>9} {'':>9} {rendering['warm_search']:7.2f}ms")
    print(f"(reuse lookups that found their stored images: {found}/{len(hits)}; the others' tasks failed)")
    folder = folder_lookup(args.folder_tasks or (300 if args.quick else tasks), args.histories, reps_cold)
    print_folder(folder)
    return {"tasks": tasks, "lookup": lookup, "render": rendering, "unfinished": scan, "found": found,
            "size_mb": size_mb, "folder": folder}


if __name__ == "__main__":
    main()
