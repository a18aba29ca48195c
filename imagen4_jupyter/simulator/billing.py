"""Credits: the balance ``GET /api/v1/chat/credit`` reports, per-model prices and a ledger of charges.

A task is charged when it is created (the service bills ``createTask``, apikley.md section 4) and is
not refunded when it fails. The price is per task and per model (``prices``, defaults in
:mod:`.models`: 4 fast, 6 standard, 12 ultra); with ``cost_per_image`` set, every model costs that much
per image instead (the simulator's older pricing). A task that does not fit the balance is refused
with body code 402 and nothing is charged.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from .models import default_prices


class Charge(NamedTuple):
    """One ledger line."""

    task_id: str
    model: str
    credits: float


def as_number(value: float) -> float | int:
    """A balance as the service writes it: an int when whole, else rounded to 4 places."""
    value = round(value, 4)
    return int(value) if value.is_integer() else value


class Bank:
    """Thread-safe balance and ledger."""

    def __init__(self, credits: float, prices: dict[str, float] | None, cost_per_image: float | None) -> None:
        self.prices: dict[str, float] = default_prices() if prices is None else dict(prices)
        self.cost_per_image = cost_per_image
        self._balance = float(credits)
        self._ledger: list[Charge] = []
        self._lock = threading.Lock()

    @property
    def balance(self) -> float:
        with self._lock:
            return self._balance

    @balance.setter
    def balance(self, value: float) -> None:
        with self._lock:
            self._balance = float(value)

    def price(self, model: str, images: int) -> float:
        """Credits a task of ``model`` making ``images`` images costs."""
        if self.cost_per_image is not None:
            return float(self.cost_per_image) * images
        return float(self.prices[model])

    def charge(self, task_id: str, model: str, cost: float) -> str | None:
        """Take ``cost`` for ``task_id``: None when done, else the 402 message (nothing taken)."""
        with self._lock:
            if self._balance - cost < 0:
                return (
                    "The current credits are insufficient. Please top up. "
                    f"(balance {as_number(self._balance)}, this task needs {cost:g})"
                )
            self._balance -= cost
            self._ledger.append(Charge(task_id, model, cost))
        return None

    @property
    def ledger(self) -> list[Charge]:
        with self._lock:
            return list(self._ledger)
