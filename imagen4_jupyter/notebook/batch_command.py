"""`%imagen4 batch SOURCE`: many prompts through `generate_many` (research/batch.py), its table in the cell.

`--dry-run` shows the plan and sends nothing: the items reused from the history (0 credits), the tasks it would
create per model with their estimated credits, and the account's balance. `--budget N` caps what this batch may
spend, by estimate; a real batch prints the plan's line before it starts. The kernel's own budget
(`%config Imagen4Magics.budget`) applies as well.
"""
from __future__ import annotations

import threading
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ..api import cards as C
from ..api import errors as E
from .cellview import LiveViews
from .options import check_wait_out, wait_override
from .sources import batch_source


def run_batch(host: Any, views: LiveViews, args: Any) -> None:
    """Run (or plan) a batch for the magic `host`; its table appears in this cell when every item finished."""
    check_wait_out(args)
    if args.concurrency < 1:
        raise UsageError("-c/--concurrency must be 1 or more.")
    if args.budget is not None and not args.budget >= 0:
        raise UsageError("--budget must be a number of credits of at least 0.")
    items, label = batch_source(args.source, host.shell.user_ns)
    defaults = host.request_defaults(args)
    if not args.dry_run:  # a plan sends nothing; without a key its balance is just unknown
        host.require_key()
    from ..research.batch import generate_many
    from ..research.budget import BatchPlan

    try:
        result = generate_many(items, session=host.session, reuse=host.reuse, concurrency=args.concurrency,
                               force=args.force, wait=False, dry_run=args.dry_run, budget=args.budget, **defaults)
    except E.InvalidRequestError as err:
        raise UsageError(f"{label}: {err}") from None
    if args.out:
        host.shell.user_ns[args.out] = result
    if isinstance(result, BatchPlan):  # --dry-run: the plan, nothing sent
        display(result) if host.rich() else print(result.line(), flush=True)
        return
    if not result.items:
        views.say(f"{label} has no items; nothing sent.")
        return
    if host.blocking(wait_override(args)):
        wait_batch(views, result)
        show_batch(host, views, result)
        return
    handle = display(C.message_bundle(f"batch of {len(result)}: the table appears here when every item has "
                                      "finished"), raw=True, display_id=True) if host.rich() else None

    def finished() -> None:
        result.wait()
        show_batch(host, views, result, handle)

    threading.Thread(target=finished, name="imagen4-batch-table", daemon=True).start()


def wait_batch(views: LiveViews, result: Any) -> None:
    """Block the kernel thread until the batch has finished. An item finishes in its job's done callback,
    after the history recorded the outcome, so reusing right after works."""
    try:
        result.wait()
    except KeyboardInterrupt:
        result.stop("not sent: interrupted")
        views.say("Interrupted: nothing more is sent; running tasks continue in the background "
                  "(running the same batch again resumes it).")


def show_batch(host: Any, views: LiveViews, result: Any, handle: Any = None) -> None:
    """The batch's table (its text lines outside a notebook), in place of `handle` when given."""
    if not host.rich():
        print(f"[imagen4] batch: {result.summary()}", flush=True)
        base = views.output_base()
        for item, row in zip(result.items, result.rows, strict=True):
            paths = "  ".join(C.shown_path(p, base) for p in row["images"])
            why = paths or row["error"] or row["note"] or ""
            print(f"  {row['index']}  {item.label}  {row['task_id'] or '-'}  {why}", flush=True)
        return
    if handle is not None:
        handle.update(result)
    else:
        display(result)
