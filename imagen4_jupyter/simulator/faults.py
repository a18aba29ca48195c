"""Scriptable fault injection: what can go wrong between client and service."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = ("createTask", "recordInfo", "credit", "downloadUrl", "image", "other")

#: Primary fault kinds; exactly one per injected fault (``delay`` may be combined).
KINDS = (
    "code",
    "html",
    "delay",
    "drop",
    "drop_after",
    "malformed",
    "truncate",
    "redirect",
    "content_type",
    "expired",
    "huge_png",
    "mislabeled",
    "oversize",
    "trickle",
)
#: Options that only refine a primary kind.
MODIFIERS = ("http_status", "retry_after", "msg")

#: Realistic ``msg`` texts for injected body codes.
CODE_MESSAGES: dict[int, str] = {
    401: "You do not have access permissions: the API key is invalid or missing",
    402: "The current credits are insufficient. Please top up.",
    404: "The requested resource was not found",
    422: "Validation error: the request parameters are invalid",
    429: "Rate limited: too many requests, please try again later",
    455: "Service unavailable: the system is under maintenance",
    500: "Server exception, please try again later or contact customer service",
    501: "Generation failed",
    505: "This feature is currently disabled",
}


@dataclass
class Fault:
    """One injected fault. ``remaining`` is None for "forever"."""

    endpoint: str
    remaining: int | None
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    hits: int = 0

    @property
    def delay(self) -> float:
        """Seconds to sleep before answering (0 if none)."""
        return float(self.options.get("delay") or 0.0)

    def get(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


def make_fault(endpoint: str, times: int | None, fault: dict[str, Any]) -> Fault:
    """Validate ``Simulator.inject`` arguments and build a :class:`Fault`."""
    if endpoint != "*" and endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be '*' or one of {ENDPOINTS}, got {endpoint!r}")
    if times is not None and times < 1:
        raise ValueError("times must be >= 1 or None (forever)")
    unknown = set(fault) - set(KINDS) - set(MODIFIERS)
    if unknown:
        raise ValueError(f"unknown fault options {sorted(unknown)}")
    kinds = [k for k in KINDS if k in fault and fault[k] not in (None, False) and k != "delay"]
    if not kinds and fault.get("http_status") is not None:
        kinds = ["html"]  # a bare http_status means a gateway error page
    if not kinds and fault.get("delay"):
        kinds = ["delay"]
    if len(kinds) != 1:
        raise ValueError(f"give exactly one fault kind of {KINDS} (got {kinds or 'none'})")
    kind = kinds[0]
    if kind == "code" and int(fault["code"]) not in CODE_MESSAGES:
        raise ValueError(f"code must be one of {sorted(CODE_MESSAGES)}")
    if kind in ("redirect", "content_type") and not isinstance(fault[kind], str):
        raise ValueError(f"{kind} must be a string")
    if kind in ("huge_png", "mislabeled", "oversize") and endpoint not in ("image", "*"):
        raise ValueError(f"{kind} is a fault of image downloads (endpoint 'image')")
    if kind == "huge_png" and fault[kind] is not True and not _is_size(fault[kind]):
        raise ValueError("huge_png must be True (12000x12000) or a (width, height) pair")
    if kind == "oversize" and (isinstance(fault[kind], bool) or not isinstance(fault[kind], int) or fault[kind] < 1):
        raise ValueError("oversize must be a number of bytes (an int >= 1)")
    if kind == "trickle" and (isinstance(fault[kind], (int, float)) and not isinstance(fault[kind], bool)
                              and fault[kind] <= 0):
        raise ValueError("trickle must be True (one byte a second) or seconds per byte > 0")
    options = dict(fault)
    if kind == "html":
        options.setdefault("http_status", 502)
        if options["http_status"] is None:
            options["http_status"] = 502
    return Fault(endpoint=endpoint, remaining=times, kind=kind, options=options)


def _is_size(value: Any) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


class FaultSet:
    """Thread-safe, ordered collection of pending faults."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, endpoint: str) -> Fault | None:
        """Consume one use of the first fault matching ``endpoint``."""
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in ("*", endpoint):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)
