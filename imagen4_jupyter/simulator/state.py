"""Simulator bookkeeping: recorded requests, tasks and their timelines.

A task's state is a pure function of the time elapsed since it was created:
``waiting`` for the first 40 % of its queue time, ``queuing`` for the rest,
``generating`` for its generation time, then ``success`` or ``fail``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

WAITING = "waiting"
QUEUING = "queuing"
GENERATING = "generating"
SUCCESS = "success"
FAIL = "fail"
FINAL_STATES = (SUCCESS, FAIL)

#: Share of the queue time spent in ``waiting`` (the rest is ``queuing``).
WAITING_SHARE = 0.4

#: A duration: a fixed number of seconds or a ``(min, max)`` uniform range.
Duration = float | tuple[float, float]

OUTCOME_KEYS = frozenset({"fail", "queue_time", "generation_time", "result_json", "result_urls", "extra_urls"})


@dataclass(frozen=True)
class Recorded:
    """One HTTP request as the simulator received it.

    ``query`` maps each parameter to its last value, ``headers`` keeps the
    names as sent, ``time`` is ``time.monotonic()`` on arrival.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None
    endpoint: str
    time: float


def sample_duration(rng: random.Random, spec: Duration) -> float:
    """Draw seconds from ``spec`` (a number or a ``(min, max)`` pair)."""
    if isinstance(spec, int | float):
        return max(0.0, float(spec))
    low, high = spec
    return max(0.0, rng.uniform(float(low), float(high)))


@dataclass(frozen=True)
class Outcome:
    """Per-task overrides taken from ``Simulator.next_outcomes``."""

    fail: tuple[str, str] | None = None
    queue_time: float | None = None
    generation_time: float | None = None
    result_json: str | None = None
    result_urls: list[str] | None = None
    #: Hostile: this many result URLs (and served images) beyond the images asked for.
    extra_urls: int = 0

    @classmethod
    def parse(cls, entry: Any) -> Outcome:
        """Validate one ``next_outcomes`` entry (raises ValueError if wrong)."""
        if not isinstance(entry, dict):
            raise ValueError(f"next_outcomes entry must be a dict, got {entry!r}")
        unknown = set(entry) - OUTCOME_KEYS
        if unknown:
            raise ValueError(f"unknown next_outcomes keys {sorted(unknown)}; allowed: {sorted(OUTCOME_KEYS)}")
        fail = entry.get("fail")
        if fail is not None:
            if isinstance(fail, str):
                fail = ("500", fail)
            code, msg = fail
            fail = (str(code), str(msg))
        urls = entry.get("result_urls")
        return cls(
            fail=fail,
            queue_time=_opt_float(entry.get("queue_time")),
            generation_time=_opt_float(entry.get("generation_time")),
            result_json=entry.get("result_json"),
            result_urls=list(urls) if urls is not None else None,
            extra_urls=max(0, int(entry.get("extra_urls") or 0)),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


@dataclass(eq=False)
class SimTask:
    """One generation task. ``create_time`` is epoch seconds (``time.time()``)."""

    task_id: str
    param: dict[str, Any]
    param_json: str
    api_key: str
    create_time: float
    create_mono: float
    queue_duration: float
    generation_duration: float
    image_size: tuple[int, int]
    token: str
    base_url: str
    cost: float
    nonce: str
    outcome: Outcome = field(default_factory=Outcome)
    default_aspect_ratio: str = "1:1"

    # -- request fields -------------------------------------------------
    @property
    def input(self) -> dict[str, Any]:
        """The request's ``input`` object."""
        return self.param.get("input", {})

    @property
    def prompt(self) -> str:
        return self.input.get("prompt", "")

    @property
    def negative_prompt(self) -> str:
        return self.input.get("negative_prompt", "")

    @property
    def model(self) -> str:
        return self.param.get("model", "")

    @property
    def aspect_ratio(self) -> str:
        return self.input.get("aspect_ratio", self.default_aspect_ratio)

    @property
    def seed(self) -> str | int:
        """The request's seed as sent: a string (standard, ultra) or an integer (fast); "" = none."""
        return self.input.get("seed", "")

    @property
    def seed_material(self) -> str:
        """What makes the images reproducible: the seed if one was given, else this task alone."""
        return f"seed:{self.seed}" if self.seed not in ("", None) else f"task:{self.nonce}"

    @property
    def num_images(self) -> int:
        return int(self.input.get("num_images", "1"))

    @property
    def served_images(self) -> int:
        """Images the simulator serves: those asked for plus any hostile ``extra_urls``."""
        return self.num_images + self.outcome.extra_urls

    @property
    def callback_url(self) -> str | None:
        return self.param.get("callBackUrl")

    # -- timeline ---------------------------------------------------------
    @property
    def total_duration(self) -> float:
        return self.queue_duration + self.generation_duration

    @property
    def complete_mono(self) -> float:
        """``time.monotonic()`` value at which the task finishes."""
        return self.create_mono + self.total_duration

    def _boundaries(self) -> tuple[float, float, float]:
        q = self.queue_duration
        return q * WAITING_SHARE, q, q + self.generation_duration

    def state_at(self, now_mono: float) -> str:
        """State at monotonic time ``now_mono``."""
        elapsed = now_mono - self.create_mono
        wait_end, queue_end, gen_end = self._boundaries()
        if elapsed < wait_end:
            return WAITING
        if elapsed < queue_end:
            return QUEUING
        if elapsed < gen_end:
            return GENERATING
        return FAIL if self.outcome.fail else SUCCESS

    @property
    def state(self) -> str:
        return self.state_at(time.monotonic())

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def _since_create(self, state: str) -> float:
        wait_end, queue_end, gen_end = self._boundaries()
        return {WAITING: 0.0, QUEUING: wait_end, GENERATING: queue_end}.get(state, gen_end)

    # -- results ----------------------------------------------------------
    @property
    def image_urls(self) -> list[str]:
        """The URLs the simulator serves for this task (valid once succeeded)."""
        return [f"{self.base_url}/files/{self.token}/{i}.png" for i in range(1, self.served_images + 1)]

    @property
    def result_urls(self) -> list[str]:
        """URLs reported in ``resultJson`` (empty until success)."""
        if self.state != SUCCESS:
            return []
        if self.outcome.result_urls is not None:
            return list(self.outcome.result_urls)
        return self.image_urls

    @property
    def fail_code(self) -> str:
        return self.outcome.fail[0] if self.outcome.fail and self.state == FAIL else ""

    @property
    def fail_msg(self) -> str:
        return self.outcome.fail[1] if self.outcome.fail and self.state == FAIL else ""

    def record_data(self, now_mono: float | None = None) -> dict[str, Any]:
        """The ``data`` object of recordInfo (and of the callback)."""
        now = time.monotonic() if now_mono is None else now_mono
        state = self.state_at(now)
        create_ms = int(self.create_time * 1000)
        finished = state in FINAL_STATES
        result_json = ""
        if state == SUCCESS:
            if self.outcome.result_json is not None:
                result_json = self.outcome.result_json
            else:
                urls = self.outcome.result_urls if self.outcome.result_urls is not None else self.image_urls
                result_json = json.dumps({"resultUrls": urls})
        fail_code, fail_msg = self.outcome.fail if (state == FAIL and self.outcome.fail) else ("", "")
        data: dict[str, Any] = {
            "taskId": self.task_id,
            "model": self.model,
            "state": state,
            "param": self.param_json,
            "resultJson": result_json,
            "failCode": fail_code,
            "failMsg": fail_msg,
            "completeTime": create_ms + int(self.total_duration * 1000) if finished else None,
            "createTime": create_ms,
            "updateTime": create_ms + int(self._since_create(state) * 1000),
            "progress": self._progress(state, now),
        }
        if finished:
            data["costTime"] = int(self.total_duration * 1000)
        return data

    def _progress(self, state: str, now: float) -> int:
        if state == SUCCESS:
            return 100
        if state != GENERATING or self.generation_duration <= 0:
            return 0
        done = (now - self.create_mono - self.queue_duration) / self.generation_duration
        return max(0, min(99, int(done * 100)))

