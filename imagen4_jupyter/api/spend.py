"""What tasks cost: a `PriceBook` of credits per task and model, and `estimate()` for a list of requests.

Plain Python, no I/O. The service bills each created task (apikley.md section 4); the price list in `models.py`
(`ModelSpec.list_price`: 4 fast, 6 standard, 12 ultra) is one public upstream list, and Apikley's own prices may
differ, so a price is an *estimate* until it is *measured*: `learn(model, credits)` records what one task of a
model really took from the balance (credits before minus credits after). A measured price wins over a configured
override, which wins over the list price. Reused results cost nothing.
"""
from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequestError
from .models import MODELS, model_spec, short_name

KEEP_MEASURED = 5  # a price is the median of a model's last few measurements (one odd delta does not move it)


def format_credits(value: float) -> str:
    """12 -> "12", 4.5 -> "4.5", 1234567 -> "1,234,567"."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0").rstrip(".")


def cost_text(cost: tuple[float, bool] | None, unit: bool = True) -> str:
    """A task's cost as shown: `6 credits` measured, `~6 credits` estimated (`~6` without the unit); "" unknown."""
    if cost is None:
        return ""
    credits, measured = cost
    return f"{'' if measured else '~'}{format_credits(credits)}{' credits' if unit else ''}"


def _credits(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise InvalidRequestError(f"{what} must be a number of credits, not {value!r}.")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{what} must be a number of credits, not {value!r}.") from None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise InvalidRequestError(f"{what} must be a number of credits of at least 0, not {value!r}.")
    return number


class PriceBook:
    """Credits per task for each model: the list price, a configured override, or a measured price.

    `PriceBook({"ultra": 10})` overrides the list price of ultra (short or full model names). Thread-safe.
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None):
        self._lock = threading.Lock()
        self._overrides: dict[str, float] = {}
        self._measured: dict[str, list[float]] = {}
        for model, credits in (overrides or {}).items():
            self.set_price(model, credits)

    def set_price(self, model: Any, credits: Any) -> None:
        """Configure the price of one model (used until a measurement says otherwise)."""
        name = model_spec(model).name
        value = _credits(credits, f"The price of {short_name(name)}")
        with self._lock:
            self._overrides[name] = value

    def learn(self, model: Any, credits: Any) -> float:
        """Record what one task of `model` was measured to cost (a balance delta); returns the price now."""
        name = model_spec(model).name
        value = _credits(credits, f"A measured price of {short_name(name)}")
        with self._lock:
            seen = self._measured.setdefault(name, [])
            seen.append(value)
            del seen[:-KEEP_MEASURED]
            return float(statistics.median(seen))

    def learn_from_balances(self, model: Any, before: Any, after: Any, tasks: int = 1) -> float | None:
        """Learn from the balance read before and after `tasks` tasks of one model; a rise (a top-up) or no
        task teaches nothing (None)."""
        spent = _credits(before, "The balance before") - _credits(after, "The balance after")
        if tasks < 1 or spent < 0:
            return None
        return self.learn(model, spent / tasks)

    def price(self, model: Any) -> tuple[float, bool]:
        """(credits per task, measured): measured when a balance delta taught it, else the estimate."""
        spec = model_spec(model)
        with self._lock:
            seen = self._measured.get(spec.name)
            if seen:
                return float(statistics.median(seen)), True
            return self._overrides.get(spec.name, float(spec.list_price)), False

    def measured(self, model: Any) -> bool:
        return self.price(model)[1]

    def forget(self, model: Any = None) -> None:
        """Drop the measurements of one model (or of all): its price is the estimate again."""
        with self._lock:
            if model is None:
                self._measured.clear()
            else:
                self._measured.pop(model_spec(model).name, None)

    def table(self) -> dict[str, tuple[float, bool]]:
        """Every model's price, by full name."""
        return {name: self.price(name) for name in MODELS}

    def __repr__(self) -> str:
        parts = [f"{short_name(n)} {format_credits(c)}{'' if m else ' (estimate)'}" for n, (c, m) in
                 self.table().items()]
        return f"<PriceBook credits per task: {', '.join(parts)}>"


_default_book = PriceBook()


def default_price_book() -> PriceBook:
    """The process's price book (what batches use unless given `prices=`)."""
    return _default_book


# -- estimates ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEstimate:
    """One model's share of a set of requests: tasks to create, results reused (0 credits), the credits the
    created ones are expected to cost, and whether the price behind it is measured or an estimate."""

    model: str
    to_create: int
    reused: int
    price: float
    measured: bool

    @property
    def short(self) -> str:
        return short_name(self.model)

    @property
    def credits(self) -> float:
        return self.to_create * self.price

    def text(self) -> str:
        approx = "" if self.measured else "~"
        return f"{self.to_create} {self.short} {approx}{format_credits(self.credits)} credits"


def estimate(requests: Sequence[Any], reusable: Iterable[int] = (), prices: PriceBook | None = None
             ) -> dict[str, ModelEstimate]:
    """Per model (full name, in the order models first appear): how many of `requests` would be created, how
    many are reused (`reusable`: the indices of requests that cost nothing), and the estimated credits.

    `requests` are GenerationRequests (anything with a `model`); `prices`: default `default_price_book()`.
    """
    book = prices if prices is not None else default_price_book()
    free = set(reusable)
    counts: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        name = model_spec(getattr(request, "model", None)).name
        slot = counts.setdefault(name, [0, 0])
        slot[1 if index in free else 0] += 1
    out: dict[str, ModelEstimate] = {}
    for name, (create, reused) in counts.items():
        price, measured = book.price(name)
        out[name] = ModelEstimate(name, create, reused, price, measured)
    return out


def total_credits(estimates: Mapping[str, ModelEstimate]) -> tuple[float, bool]:
    """(credits of every model together, measured: True only if every model with a task to create is)."""
    total = sum(e.credits for e in estimates.values())
    return total, all(e.measured for e in estimates.values() if e.to_create)
