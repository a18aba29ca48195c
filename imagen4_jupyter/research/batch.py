"""Many requests at once: `generate_many(items)` with bounded concurrency, one shared rate-limit backoff,
a progress line, resume through the history, and the results as a table.

Every item is validated before anything is sent (`items.py`). At most `concurrency` tasks are in flight (a
createTask request sent, or a task being followed, and not finished). When the service answers 429 (or 455),
every submission pauses for the pause the client's `RetryPolicy` gives (its Retry-After, within the policy's
cap). A createTask whose outcome is unknown (sent, no answer) is never resent: the item is reported as
`lost-unknown`.

With a `Session` (the default: the kernel's), each task is recorded in the per-notebook history, tagged
with the batch and the item's index, so running the same batch again (`plan.py`) follows its unfinished tasks
and shows its finished ones without creating new tasks.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..api import errors as E
from ..api.spend import PriceBook, default_price_book
from .budget import BatchPlan, make_plan, models_label
from .items import REQUEST_FIELDS, batch_id, build_requests
from .plan import ResumePlan
from .progress import Progress
from .results import BatchItem, BatchResult
from .runner import ABORTING, MAX_CONSECUTIVE_429, MAX_FOLLOWS, BatchRun
from .templates import expand, placeholders

if TYPE_CHECKING:
    from ..api.client import Imagen4Client
    from ..records.session import Session

__all__ = ["ABORTING", "MAX_CONSECUTIVE_429", "MAX_FOLLOWS", "REQUEST_FIELDS", "batch_id", "build_requests",
           "default_session", "generate_many", "last_batch"]

last_batch: BatchResult | None = None  # the newest batch, also after an interrupt (Ctrl-C / kernel interrupt)
_submitting: dict[tuple, BatchResult] = {}  # batches still sending, by (history or client, batch id)
_submitting_lock = threading.Lock()


def default_session() -> Session:
    """The kernel's session (`records.session.get_session()`); the `%%imagen4` magic registers its session
    there, so a batch shares the magic's history and settings."""
    from ..records.session import get_session

    return get_session()


# -- the public function -----------------------------------------------------------------------------
def generate_many(items: Any, *, session: Session | None = None, client: Imagen4Client | None = None,
                  concurrency: int = 4, force: bool = False, reuse: str | None = None, progress: bool = True,
                  timeout: float | None = None, name: str | None = None, wait: bool = True,
                  model: str | None = None, dry_run: bool = False, budget: float | None = None,
                  prices: PriceBook | None = None, values: Mapping[str, Any] | None = None,
                  sample: int | None = None, sample_seed: int = 0, **defaults: Any) -> BatchResult | BatchPlan:
    """Generate images for many prompts or requests; blocks until all are done and returns a `BatchResult`.

    items: prompts (str), dicts of request fields, GenerationRequests, a pandas Series or DataFrame (its
    `prompt`, `negative_prompt`, `aspect_ratio`, `num_images`, `seed`, `model` columns). `defaults`
    (aspect_ratio=, num_images=, seed=, negative_prompt=) apply to str and dict items. `model`: the model of
    every str and dict item without its own (`fast`, `standard`, `ultra` or a full name; default standard).
    All items are validated, each for its model, before anything is sent.

    A prompt template instead of items: `generate_many("A {animal} at {time}", values={"animal": [...],
    "time": [...]})` makes one item per combination of the lists (`values` may also hold lists of request fields:
    model, seed, aspect_ratio, negative_prompt, num_images); `sample=N` draws N distinct combinations with
    `random.Random(sample_seed)`, balanced across each list's values (the same seed, the same sample).

    concurrency: tasks in flight at once. One shared backoff: a 429 pauses every submission for the client's
    `RetryPolicy` pause (its Retry-After, up to `max_retry_after`). A createTask with an unknown outcome is
    never resent (`lost-unknown`).

    session: history and reuse (default: the notebook's session). Running the same batch again reuses its
    finished tasks and follows its unfinished ones instead of creating new tasks; `reuse` ('seeded',
    'always', 'never') also applies the history's reuse policy to each item; `force=True` creates every
    task anew. `client`: run without a history. `timeout`: stop submitting after this many seconds (running
    tasks go on; `result.wait()`). `name`: identify the batch in the history by name instead of by content.
    `wait=False`: return the result at once and submit from a background thread (the progress display, made
    here, updates in place); `result.wait()` blocks until every item has finished, `result.stop()` stops
    sending.

    dry_run=True: send nothing and return the `BatchPlan`: per model how many items are reused or followed
    (0 credits) and how many tasks would be created, the estimated credits and the balance (one credit
    request). A real batch shows the same line before it starts (with progress on). `budget`: credits this
    batch may spend, by estimate: it stops sending before the first item whose estimated cost passes what is
    left (that item and later new ones are not-submitted, the note says why; reused items cost nothing).
    `prices`: the `PriceBook` behind the estimates (default: the process's, `api.spend.default_price_book()`).
    A 402 (not enough credits) stops the batch at once; nothing is resent.
    """
    global last_batch
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise E.InvalidRequestError(f"concurrency must be a whole number of at least 1, not {concurrency!r}.")
    if timeout is not None and not timeout > 0:
        raise E.InvalidRequestError("timeout must be a positive number of seconds (or None).")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0):
        raise E.InvalidRequestError(f"budget must be a number of credits of at least 0 (or None), not {budget!r}.")
    if model is not None:
        defaults["model"] = model
    if isinstance(items, str) and (values is not None or placeholders(items)):
        items = expand(items, values or {}, sample=sample, sample_seed=sample_seed)
    elif values is not None or sample is not None:
        raise E.InvalidRequestError("values= and sample= go with a prompt template: a str with {name} placeholders "
                                    "as the first argument.")
    requests = build_requests(items, **defaults)
    if session is not None and client is not None and session.client is not client:
        raise E.InvalidRequestError("Pass either session= or client=, not both (the session has its own client).")
    if session is None and client is None:
        session = default_session()
    if session is not None:
        session.begin()  # a batch reads the key and address in force once
        from ..records.session import REUSE_POLICIES

        if reuse is not None and reuse not in REUSE_POLICIES:
            raise E.InvalidRequestError(f"reuse must be one of {', '.join(REUSE_POLICIES)}, not {reuse!r}.")
        client = session.client
    assert client is not None
    bid = batch_id(requests, name)
    batch_items = [BatchItem(i, r) for i, r in enumerate(requests)]
    # the session's prices (learned from its balance reads) when there is one, else the process's
    book = prices if prices is not None else session.spending.prices if session is not None else default_price_book()
    if dry_run:  # the history is read, the balance asked; nothing else is sent
        preview = ResumePlan(batch_items, session=session, bid=bid, force=force, reuse=reuse)
        preview.read()
        return make_plan(batch_items, preview, prices=book, budget=budget, client=client)
    if not batch_items:
        last_batch = BatchResult(batch_items, bid)
        return last_batch
    plan = ResumePlan(batch_items, session=session, bid=bid, force=force, reuse=reuse)  # read when the run starts
    run = BatchRun(batch_items, session=session, client=client, concurrency=concurrency, plan=plan, bid=bid,
                   timeout=timeout, budget=budget, prices=book)
    result = BatchResult(batch_items, bid, stats=run.stats, control=run)
    last_batch = result
    key = (str(session.history.path) if session is not None else id(client), bid)
    with _submitting_lock:
        running = _submitting.get(key)
        if running is not None:  # both would create the same tasks
            raise E.InvalidRequestError("This batch is still being submitted by an earlier run: wait for it "
                                        "(result.wait()) or stop it (result.stop()) first; running it again then "
                                        "resumes it, with no new task for what was sent.")
        _submitting[key] = result
    if progress:
        run.show_progress(Progress(len(batch_items), label=models_label(batch_items)))
    if not wait:
        run.start_background(lambda: _done_submitting(key, result))
        return result
    try:
        run.run()
    except KeyboardInterrupt:
        result.stop("not sent: interrupted")
        print(f"imagen4 batch interrupted: {run.in_flight} task(s) still running in the background; "
              "imagen4_jupyter.research.batch.last_batch has the result, and running the same batch again resumes it.",
              file=sys.stderr)
        raise
    finally:
        _done_submitting(key, result)
    return result


def _done_submitting(key: tuple, result: BatchResult) -> None:
    with _submitting_lock:
        if _submitting.get(key) is result:
            del _submitting[key]
