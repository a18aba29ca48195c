"""What a batch will cost before it is sent, and a budget for one batch.

`make_plan(...)` answers "what would this batch do?" from the history alone (nothing is sent): per model, how
many items are reused or followed (0 credits) and how many tasks would be created, their estimated credits
(`api.spend.PriceBook`) and the account's balance. `generate_many(..., dry_run=True)` returns that `BatchPlan`;
a real batch prints its one line before it starts. `Budget` is what `generate_many(..., budget=N)` spends from:
an item is sent only while its estimated cost fits what is left, and the first one that does not fit stops the
submitting (reused results cost nothing and never count).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..api.cards import esc
from ..api.models import DEFAULT_MODEL, short_name
from ..api.spend import ModelEstimate, PriceBook, estimate, format_credits, total_credits
from .plan import CREATE, FOLLOW, LOST, REUSE, ResumePlan

if TYPE_CHECKING:
    from ..api.client import Imagen4Client
    from .results import BatchItem

SLACK = 1e-9  # float sums of prices: 6 + 6 fits a budget of 12


class Budget:
    """The credits one batch may spend, by estimate: `take(item)` before sending it, `give_back(item)` when the
    service answered that nothing was created (so the item may be sent again later, and charged again)."""

    def __init__(self, limit: float, prices: PriceBook):
        self.limit = float(limit)
        self.prices = prices
        self.spent = 0.0
        self.stopped_at: int | None = None  # the first item that did not fit: nothing after it is sent
        self.stop_note = ""
        self.costs: dict[int, float] = {}

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent)

    def take(self, item: BatchItem) -> str | None:
        """Charge the item's estimated cost and return None; or, if it does not fit (or an earlier item did
        not), return why it is not sent."""
        price, measured = self.prices.price(item.request.model)
        cost = f"{'' if measured else '~'}{format_credits(price)}"
        if self.stopped_at is None and price <= self.limit - self.spent + SLACK:
            self.spent += price
            self.costs[item.index] = price
            return None
        if self.stopped_at is None:
            self.stopped_at = item.index
            self.stop_note = f"{format_credits(self.left)} credits left, it costs {cost}"
            return f"budget: {format_credits(self.left)} credits left, this item costs {cost}"
        return f"budget: the batch stopped sending at item {self.stopped_at} ({self.stop_note})"

    def give_back(self, item: BatchItem) -> None:
        self.spent -= self.costs.pop(item.index, 0.0)


@dataclass
class BatchPlan:
    """What a batch would do, found from the history without sending anything.

    `models`: per model (full name) a `ModelEstimate` (tasks to create, items reused or followed, price);
    `actions`: per item what it would be (reuse, follow, lost, create; `budget` when a budget stops it);
    `balance`: the account's credits (None if unknown, `balance_error` says why); `budget` as given.
    """

    items: int
    models: dict[str, ModelEstimate]
    actions: list[str]
    balance: float | None = None
    balance_error: str | None = None
    budget: float | None = None
    notes: dict[int, str] = field(default_factory=dict)  # why an item would not be sent

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a == action)

    @property
    def reused(self) -> int:
        return self.count(REUSE)

    @property
    def followed(self) -> int:
        return self.count(FOLLOW)

    @property
    def to_create(self) -> int:
        return self.count(CREATE)

    @property
    def over_budget(self) -> list[int]:
        """The items a budget would keep from being sent."""
        return [i for i, a in enumerate(self.actions) if a == "budget"]

    @property
    def credits(self) -> float:
        """Estimated credits of the tasks that would be created (reused and followed items cost nothing)."""
        return total_credits(self.models)[0]

    @property
    def measured(self) -> bool:
        """True when every price behind `credits` was measured from balance deltas."""
        return total_credits(self.models)[1]

    def balance_text(self) -> str:
        if self.balance is not None:
            return f"balance {format_credits(self.balance)} credits"
        return "balance unknown" + (f" ({self.balance_error})" if self.balance_error else "")

    def line(self) -> str:
        """One line: `imagen4 batch plan: 5 items · 2 reused (0 credits) · 3 to create: 2 standard ~12 credits,
        1 ultra ~12 credits · ~24 credits (estimate) · balance 1,000 credits`."""
        parts = [f"{self.items} item{'s' if self.items != 1 else ''}"]
        if self.reused:
            parts.append(f"{self.reused} reused (0 credits)")
        if self.followed:
            parts.append(f"{self.followed} followed (0 credits)")
        if self.count(LOST):
            parts.append(f"{self.count(LOST)} outcome unknown (not resent)")
        created = [m for m in self.models.values() if m.to_create]
        parts.append(f"{self.to_create} to create" + (": " + ", ".join(m.text() for m in created) if created else ""))
        approx = "" if self.measured else "~"
        parts.append(f"{approx}{format_credits(self.credits)} credits" + ("" if self.measured else " (estimate)"))
        if self.budget is not None:
            parts.append(f"budget {format_credits(self.budget)}"
                         + (f": {len(self.over_budget)} not sent" if self.over_budget else ""))
        parts.append(self.balance_text())
        return "imagen4 batch plan: " + " · ".join(parts)

    def __repr__(self) -> str:
        return f"<BatchPlan {self.line().removeprefix('imagen4 batch plan: ')}>"

    def __str__(self) -> str:
        return self.line()

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in
                       ("model", "to create", "reused / followed", "credits per task", "estimated credits"))
        rows = []
        for m in self.models.values():
            price = format_credits(m.price) + ("" if m.measured else " (estimate)")
            rows.append(f"<tr><td>{esc(m.short)}</td><td>{m.to_create}</td><td>{m.reused}</td><td>{esc(price)}</td>"
                        f"<td>{'' if m.measured else '~'}{esc(format_credits(m.credits))}</td></tr>")
        notes = "".join(f"<li>item {i}: {esc(n)}</li>" for i, n in sorted(self.notes.items())[:20])
        return (f"<div style='font-family:var(--jp-ui-font-family,sans-serif);font-size:13px'>"
                f"<b>imagen4 batch plan</b> (nothing sent): {esc(self.line().removeprefix('imagen4 batch plan: '))}"
                f"<table style='font-size:12px'><tr>{head}</tr>{''.join(rows)}</table>"
                f"{f'<ul>{notes}</ul>' if notes else ''}</div>")


def read_balance(client: Imagen4Client) -> tuple[float | None, str | None]:
    """(credits, None), or (None, why) when the balance cannot be read (nothing else is sent)."""
    try:
        return client.credits(), None
    except Exception as err:  # noqa: BLE001 - an unknown balance is said, never raised
        return None, getattr(err, "title", type(err).__name__)


def make_plan(items: list[BatchItem], resume: ResumePlan, *, prices: PriceBook, budget: float | None = None,
              client: Imagen4Client | None = None) -> BatchPlan:
    """The plan of a batch whose history `resume` has read: nothing is claimed, nothing is sent (except one
    balance request when `client` is given)."""
    actions = resume.preview()
    plan = BatchPlan(len(items), {}, [actions[item.index] for item in items], budget=budget)
    if budget is not None:
        spend = Budget(budget, prices)
        for item in items:
            if actions[item.index] == CREATE:
                note = spend.take(item)
                if note is not None:
                    plan.actions[item.index] = "budget"
                    plan.notes[item.index] = note
    kept = [item for item in items if plan.actions[item.index] != "budget"]  # a budget's refusals cost nothing
    plan.models = estimate([item.request for item in kept],
                           [k for k, item in enumerate(kept) if plan.actions[item.index] != CREATE], prices)
    if client is not None:
        plan.balance, plan.balance_error = read_balance(client)
    return plan


def models_label(items: list[BatchItem]) -> str | None:
    """The models of a batch for its progress line ("ultra", "fast + ultra"), or None when every item uses
    the default model (the line then reads as it always has)."""
    names = list(dict.fromkeys(item.request.model for item in items))
    if not names or names == [DEFAULT_MODEL]:
        return None
    return " + ".join(short_name(n) for n in names)
