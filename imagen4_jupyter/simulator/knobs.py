"""The simulator's run-time settings that live in its parts (bank, limits, callback sender), as properties.

:class:`~.core.Simulator` mixes this in; each property reads or replaces one public part.
"""

from __future__ import annotations

from .billing import Bank, Charge
from .callbacks import Callbacks
from .limits import CREATE_LIMIT, QUERY_LIMIT, Limits, RateLimiter, WindowLimiter


class Knobs:
    """Properties over ``bank`` (credits, prices, ledger), ``limits`` (429s) and ``sender`` (callbacks)."""

    bank: Bank
    limits: Limits
    sender: Callbacks

    @property
    def credits(self) -> float:
        return self.bank.balance

    @credits.setter
    def credits(self, value: float) -> None:
        self.bank.balance = value

    @property
    def prices(self) -> dict[str, float]:
        """Credits per task by model (change entries in place or assign a new dict)."""
        return self.bank.prices

    @prices.setter
    def prices(self, value: dict[str, float]) -> None:
        self.bank.prices = dict(value)

    @property
    def cost_per_image(self) -> float | None:
        """When set, every model costs this much per image instead of ``prices`` per task."""
        return self.bank.cost_per_image

    @cost_per_image.setter
    def cost_per_image(self, value: float | None) -> None:
        self.bank.cost_per_image = value

    @property
    def charges(self) -> list[Charge]:
        """The ledger: one ``(task_id, model, credits)`` per task charged, in order."""
        return self.bank.ledger

    @property
    def webhook_key(self) -> str | None:
        """The key callbacks are signed with (None: unsigned)."""
        return self.sender.webhook_key

    @webhook_key.setter
    def webhook_key(self, value: str | None) -> None:
        self.sender.webhook_key = value

    @property
    def enforce_limits(self) -> bool:
        """Whether the documented createTask / recordInfo windows answer 429."""
        return self.limits.enforce

    @enforce_limits.setter
    def enforce_limits(self, value: bool) -> None:
        self.limits.enforce = bool(value)

    @property
    def rate_limit(self) -> tuple[float, float] | None:
        return self.limits.bucket.spec

    @rate_limit.setter
    def rate_limit(self, value: tuple[float, float] | None) -> None:
        self.limits.bucket = RateLimiter(value)

    @property
    def create_limit(self) -> tuple[float, float]:
        """(count, window seconds) of createTask per account, when ``enforce_limits``."""
        return self.limits.create.spec or CREATE_LIMIT

    @create_limit.setter
    def create_limit(self, value: tuple[float, float]) -> None:
        self.limits.create = WindowLimiter(value)

    @property
    def query_limit(self) -> tuple[float, float]:
        """(count, window seconds) of recordInfo per key, when ``enforce_limits``."""
        return self.limits.query.spec or QUERY_LIMIT

    @query_limit.setter
    def query_limit(self, value: tuple[float, float]) -> None:
        self.limits.query = WindowLimiter(value)
