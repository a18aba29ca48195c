"""What this kernel and this notebook spend: a kernel budget that is never overspent, prices learned from the
balance, and the notebook's spend from its history.

How sure each figure is:
- a *measured* price is a balance delta around one createTask while no other createTask of this kernel was in
  flight and nothing shows anyone else spending meanwhile (the service bills at creation; a neighbour's
  createTask in the shared pacing state or in the history, or a balance that does not fall or keeps moving,
  discards the measurement); a model's price is the median of its last few measurements;
- otherwise the price is an *estimate*: a configured override or the public list price (`api/spend.py`);
- the notebook's spend adds each created task's recorded cost; reused results cost nothing; tasks a simulator
  made (`"simulated": true`) are added apart, never into real spending, and one whose simulator was gone before
  it finished (`SimulatorGone`, records/simulated.py) is not counted at all.
"""
from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..api.errors import BudgetExceededError, Imagen4Error, InvalidRequestError
from ..api.models import model_spec, short_name
from ..api.request import GenerationRequest
from ..api.spend import PriceBook, format_credits
from .entries import recorded_cost
from .history import History


class Spending:
    """This kernel's budget: the credits it may spend (`budget`, None for no limit) and what it has spent."""

    def __init__(self, prices: PriceBook, budget: float | None = None):
        self.prices = prices
        self.budget = budget
        self.spent = 0.0  # credits of the tasks this kernel created (measured where known, else estimated)
        self.reserved = 0.0  # requests on their way: counted until they are created or certainly not
        self._charged: dict[str, float] = {}  # task id -> what it was counted at
        self._lock = threading.Lock()

    def configure(self, budget: float | None, prices: dict[str, Any] | None = None) -> None:
        """The magic's traits: the budget, and configured prices (a measured price still wins over them)."""
        self.budget = budget
        for model, credits in (prices or {}).items():
            self.prices.set_price(model, credits)

    def left(self) -> float | None:
        with self._lock:
            return None if self.budget is None else max(0.0, self.budget - self.spent - self.reserved)

    def reserve(self, request: GenerationRequest) -> tuple[float, bool]:
        """Count a request's price against the budget before it is sent: (credits, measured). Raises
        BudgetExceededError (nothing sent) when it would pass what is left."""
        credits, measured = self.prices.price(request.model)
        with self._lock:
            if self.budget is not None and self.spent + self.reserved + credits > self.budget + 1e-9:
                left = max(0.0, self.budget - self.spent - self.reserved)
                kind = "" if measured else " (an estimate)"
                raise BudgetExceededError(
                    f"Not sent: this {short_name(request.model)} task would cost ~{format_credits(credits)} credits"
                    f"{kind}, and {format_credits(left)} of this kernel's budget of "
                    f"{format_credits(self.budget)} are left. Raise it with %config Imagen4Magics.budget = N "
                    "(or None for no limit).")
            self.reserved += credits
        return credits, measured

    def settle(self, reserved: float, spent: float | None, task_id: str | None = None) -> None:
        """A reserved request ended: `spent` credits (None: certainly nothing was created) for `task_id`."""
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            if spent is not None:
                self.spent += spent
                if task_id:
                    self._charged[task_id] = spent

    def correct(self, task_id: str, actual: float) -> None:
        """A task this kernel created really cost `actual` (others, resumed from a history, are not counted)."""
        with self._lock:
            counted = self._charged.get(task_id)
            if counted is not None:
                self.spent = max(0.0, self.spent + actual - counted)
                self._charged[task_id] = actual


@dataclass
class ProbeReading:
    """What `PriceProbe.start` read: its ticket, the balance, when (wall clock), and who to ask about neighbours."""

    ticket: int
    balance: float
    started: float
    others: Callable[[float, float], bool | None] | None = None


class PriceProbe:
    """Measures a model's price from the balance around one createTask: only while its price is not measured
    yet and no other createTask of this kernel is in flight (cheap: a few balance reads per model, once).

    A measurement is discarded, never averaged in, when anyone else may have spent meanwhile: another process of
    this account took a create slot in the shared pacing state (`others`, api/pacing.py), the history shows
    another request `sending` in that time (a kernel elsewhere sharing the folder), or the balance moved in a way
    one task cannot explain (it did not fall, or it still moves right after). `discarded` counts them."""

    def __init__(self, prices: PriceBook, history: History | None = None):
        self.prices = prices
        self.history = history
        self.discarded = 0
        self._in_flight = 0
        self._starts = 0  # createTasks begun: another one begun (and maybe ended) meanwhile spoils a measurement
        self._lock = threading.Lock()

    def start(self, request: GenerationRequest, balance: Callable[[], float],
              others: Callable[[float, float], bool | None] | None = None) -> ProbeReading | None:
        """Before sending: a reading if this createTask can teach its model's price. `others(start, end)`: did
        another process of this account send a createTask in that time (None: cannot tell)."""
        with self._lock:
            self._in_flight += 1
            self._starts += 1
            ticket, alone = self._starts, self._in_flight == 1
        if not alone or self.prices.price(request.model)[1]:
            return None
        try:
            started = time.time()
            return ProbeReading(ticket, balance(), started, others)
        except Imagen4Error:
            return None

    def end(self, request: GenerationRequest, before: ProbeReading | None, balance: Callable[[], float],
            created: bool) -> float | None:
        """After the answer: the measured price (None if this one could not teach it)."""
        with self._lock:
            alone = before is not None and self._starts == before.ticket and self._in_flight == 1
            self._in_flight -= 1
        if before is None or not created or not alone:
            return None
        try:
            after = balance()
            with self._lock:
                if self._starts != before.ticket:  # another createTask began while the balance was read
                    return None
            if self._neighbour(before, after, balance):
                with self._lock:
                    self.discarded += 1
                return None
            return self.prices.learn_from_balances(request.model, before.balance, after)
        except (Imagen4Error, InvalidRequestError):
            return None

    def _neighbour(self, before: ProbeReading, after: float, balance: Callable[[], float]) -> bool:
        """True if someone else may have spent between the two balance reads (the reading is then discarded)."""
        end = time.time()
        if before.others is not None and before.others(before.started, end):
            return True  # another process of this account sent a createTask meanwhile (shared pacing state)
        if self.history is not None and _sends_between(self.history, before.started, end) > 1:
            return True  # another request than this one was being sent meanwhile (a kernel sharing the folder)
        if before.balance - after <= 0:
            return True  # a task that cost nothing, or a top-up: not one task's price
        return abs(balance() - after) > 1e-9  # still moving right after: someone else is spending


def _sends_between(history: History, start: float, end: float, tail: int = 1 << 18) -> int:
    """How many `sending` events the end of the history holds between `start` and `end` (wall clock)."""
    try:
        with open(history.path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - tail))
            lines = fh.read().splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        if b'"sending"' not in line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        t = ev.get("time") if isinstance(ev, dict) else None
        if ev.get("event") == "sending" and isinstance(t, (int, float)) and start - 0.002 <= t <= end + 0.002:
            count += 1
    return count


@dataclass
class SpendSummary:
    """A notebook's spend from its history: credits by model and by day, and what reuse saved."""

    tasks: int = 0
    credits: float = 0.0
    estimated: bool = False  # some figures are estimates, not measured
    by_model: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    by_day: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    reused_tasks: int = 0
    reused_images: int = 0
    saved: float = 0.0  # credits reuse did not spend
    simulated_tasks: int = 0  # made by a simulator: never billed, never in `credits`
    simulated_credits: float = 0.0

    def lines(self) -> list[str]:
        mark = " (some estimated)" if self.estimated else ""
        out = [f"{self.tasks} task{'s' if self.tasks != 1 else ''} created: {format_credits(self.credits)} "
               f"credits{mark}"]
        out += [f"  {m}: {int(n)} task{'s' if n != 1 else ''}, {format_credits(c)} credits"
                for m, (n, c) in sorted(self.by_model.items())]
        out += [f"  {d}: {int(n)} task{'s' if n != 1 else ''}, {format_credits(c)} credits"
                for d, (n, c) in sorted(self.by_day.items())]
        if self.simulated_tasks:
            out.append(f"simulated: {self.simulated_tasks} task{'s' if self.simulated_tasks != 1 else ''} made by a "
                       f"simulator, {format_credits(self.simulated_credits)} simulated credits (not billed, not "
                       "counted above)")
        out.append(f"reuse: {self.reused_tasks} task{'s' if self.reused_tasks != 1 else ''} "
                   f"({self.reused_images} image{'s' if self.reused_images != 1 else ''}) shown from the history, "
                   f"~{format_credits(self.saved)} credits not spent")
        return out


def task_cost(event: dict, prices: PriceBook) -> tuple[float, bool]:
    """The cost a `submitted` event recorded, or an estimate from `prices` for its model."""
    cost = recorded_cost(event.get("cost"))
    if cost is not None:
        return cost
    model = (event.get("request") or {}).get("model")
    try:
        return prices.price(model_spec(model).name)
    except Exception:  # an unknown model in an old or foreign line: the default's price
        return prices.price(None)


def spend_summary(history: History, prices: PriceBook) -> SpendSummary:
    """Add up a notebook's history: created tasks at their recorded cost (later `cost` events measured it),
    reuse (`reused`: from another history; `reuse`: shown again, from this one, say after Restart & Run All)
    at the price it would have cost: the task's own recorded cost when this history created it."""
    summary = SpendSummary()
    costs: dict[str, tuple[float, bool, str, str]] = {}
    simulated: dict[str, float] = {}
    copied: dict[str, float] = {}  # tasks of other histories reused here: what each would have cost
    for ev in history.iter_events():
        kind = ev.get("event")
        if kind == "reuse" and isinstance(ev.get("task_id"), str):  # shown again from this history
            tid = ev["task_id"]
            summary.reused_tasks += 1
            images = ev.get("images")
            summary.reused_images += images if isinstance(images, int) and images else 1
            summary.saved += costs[tid][0] if tid in costs else copied.get(tid, prices.price(None)[0])
        elif kind == "submitted" and isinstance(ev.get("task_id"), str) and ev.get("simulated") is True:
            simulated[ev["task_id"]] = task_cost(ev, prices)[0]
        elif kind == "failed" and ev.get("kind") == "SimulatorGone":  # its simulator ended: it cost nothing
            simulated.pop(str(ev.get("task_id")), None)
        elif kind == "cost" and ev.get("task_id") in simulated and (cost := recorded_cost(ev)) is not None:
            simulated[ev["task_id"]] = cost[0]
        elif kind == "submitted" and isinstance(ev.get("task_id"), str):
            credits, measured = task_cost(ev, prices)
            model = short_name((ev.get("request") or {}).get("model"))
            day = _dt.date.fromtimestamp(ev["time"]).isoformat() if isinstance(ev.get("time"), (int, float)) else "?"
            costs[ev["task_id"]] = (credits, measured, model, day)
        elif kind == "cost" and ev.get("task_id") in costs and (cost := recorded_cost(ev)) is not None:
            _, _, model, day = costs[ev["task_id"]]
            costs[ev["task_id"]] = (*cost, model, day)
        elif kind == "reused":
            summary.reused_tasks += 1
            summary.reused_images += len(ev.get("images") or []) or 1
            saved = task_cost(ev, prices)[0]
            summary.saved += saved
            if isinstance(ev.get("task_id"), str):
                copied[ev["task_id"]] = saved
    summary.simulated_tasks, summary.simulated_credits = len(simulated), sum(simulated.values())
    for credits, measured, model, day in costs.values():
        summary.tasks += 1
        summary.credits += credits
        summary.estimated |= not measured
        for table, key in ((summary.by_model, model), (summary.by_day, day)):
            table[key][0] += 1
            table[key][1] += credits
    return summary


def spend_bundle(summary: SpendSummary, where: Any, spending: Spending | None = None) -> dict[str, str]:
    """`%imagen4 spend`: the text lines and a small table (and this kernel's budget, if one is set)."""
    from ..api.cards import esc

    lines = summary.lines()
    if spending is not None and spending.budget is not None:
        lines.append(f"this kernel's budget: {format_credits(spending.left() or 0)} of "
                     f"{format_credits(spending.budget)} credits left")
    def table_rows(table: dict[str, list[float]]) -> str:
        return "".join(f"<tr><td style='text-align:left'>{esc(k)}</td><td>{int(n)}</td>"
                       f"<td>{esc(format_credits(c))}</td></tr>" for k, (n, c) in sorted(table.items()))

    rows, days = table_rows(summary.by_model), table_rows(summary.by_day)
    head = "<tr><th style='text-align:left'>{}</th><th>tasks</th><th>credits</th></tr>"
    tail = "".join(f"<div>{esc(line)}</div>" for line in lines
                   if line.startswith(("simulated", "reuse", "this kernel")))
    html = (f"<div class='imagen4-spend'><div>{esc(lines[0])} · {esc(str(where))}</div>"
            f"<table>{head.format('model')}{rows}</table><table>{head.format('day')}{days}</table>{tail}</div>")
    return {"text/plain": f"[imagen4] spend in {where}\n" + "\n".join(lines), "text/html": html}
