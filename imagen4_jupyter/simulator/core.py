"""The :class:`Simulator`: a local, faithful stand-in for the Apikley imagen4 API."""

from __future__ import annotations

import heapq
import itertools
import json
import random
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from .faults import Fault, FaultSet, make_fault
from .images import ImageCache, image_key, image_size
from .server import SimHTTPServer
from .state import SUCCESS, Duration, Outcome, RateLimiter, Recorded, SimTask, sample_duration
from .validation import validate_create_body

HOST = "127.0.0.1"
DEFAULT_KEY = "test-key"
_IMAGE_NAME = re.compile(r"([1-9][0-9]*)\.png")


class Simulator:
    """Serve the Apikley imagen4 API on loopback, with scriptable behaviour.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Durations,
    ``url_ttl``, ``cost_per_image`` and ``api_keys`` are plain attributes that
    may be changed while running; ``credits`` and ``rate_limit`` are
    properties. Durations are ``(min, max)`` uniform ranges or fixed numbers.
    """

    def __init__(
        self,
        port: int = 0,
        api_keys: tuple[str, ...] | list[str] | None = (DEFAULT_KEY,),
        queue_time: Duration = (0.0, 0.0),
        generation_time: Duration = (0.05, 0.05),
        image_scale: float = 1.0,
        url_ttl: float = 86400.0,
        credits: float = 1_000_000.0,
        rate_limit: tuple[float, float] | None = None,
        random_seed: int = 0,
        cost_per_image: float = 4.0,
        callback_timeout: float = 5.0,
    ) -> None:
        self.port = port
        if isinstance(api_keys, str):
            api_keys = (api_keys,)
        self.api_keys: tuple[str, ...] | None = tuple(api_keys) if api_keys is not None else None
        self.queue_time: Duration = queue_time
        self.generation_time: Duration = generation_time
        self.image_scale = image_scale
        self.url_ttl = url_ttl
        self.cost_per_image = cost_per_image
        self.callback_timeout = callback_timeout
        #: Per-task overrides; each new task pops the first entry.
        self.next_outcomes: list[dict[str, Any]] = []

        self._lock = threading.RLock()
        self._rng = random.Random(random_seed)
        self._credits = float(credits)
        self._rate_limiter = RateLimiter(rate_limit)
        self._faults = FaultSet()
        self._images = ImageCache()
        self._tasks: dict[str, SimTask] = {}
        self._tokens: dict[str, str] = {}
        self._records: list[Recorded] = []
        self._callbacks: list[tuple[str, dict[str, Any], int | str]] = []
        self._counter = itertools.count(1)
        self._schedule_seq = itertools.count()

        self._server: SimHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._schedule: list[tuple[float, int, str]] = []
        self._schedule_cv = threading.Condition(self._lock)
        self._scheduler: threading.Thread | None = None
        self._bound_port: int | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Simulator:
        """Bind and serve in background threads (no-op if already running)."""
        with self._lock:
            if self._server is not None:
                return self
            port = self._bound_port if self._bound_port is not None else self.port
            self._stopping.clear()
            server = SimHTTPServer((HOST, port), self)
            self._server = server
            self._bound_port = server.server_address[1]
            self._serve_thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="apikley-sim", daemon=True
            )
            self._scheduler = threading.Thread(target=self._run_scheduler, name="apikley-sim-cb", daemon=True)
        self._serve_thread.start()
        self._scheduler.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            self._stopping.set()
            self._schedule_cv.notify_all()
        if server is None:
            return
        server.stop_serving()
        for thread in (self._serve_thread, self._scheduler):
            if thread is not None:
                thread.join(timeout=2)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (after :meth:`start`)."""
        if self._bound_port is None:
            raise RuntimeError("Simulator not started")
        return f"http://{HOST}:{self._bound_port}"

    @property
    def api_key(self) -> str:
        """A key the simulator accepts."""
        return self.api_keys[0] if self.api_keys else DEFAULT_KEY

    # -- settable state ----------------------------------------------------
    @property
    def credits(self) -> float:
        with self._lock:
            return self._credits

    @credits.setter
    def credits(self, value: float) -> None:
        with self._lock:
            self._credits = float(value)

    @property
    def rate_limit(self) -> tuple[float, float] | None:
        return self._rate_limiter.spec

    @rate_limit.setter
    def rate_limit(self, value: tuple[float, float] | None) -> None:
        self._rate_limiter = RateLimiter(value)

    # -- recording -----------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        """Copy of every request received, in arrival order."""
        with self._lock:
            return list(self._records)

    def count(self, endpoint: str | None = None) -> int:
        """Number of recorded requests to ``endpoint`` (None or "*" = all)."""
        with self._lock:
            if endpoint in (None, "*"):
                return len(self._records)
            return sum(1 for r in self._records if r.endpoint == endpoint)

    def reset_counts(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._records.clear()

    def _record(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes | None, endpoint: str
    ) -> None:
        rec = Recorded(method, path, query, headers, body, endpoint, time.monotonic())
        with self._lock:
            self._records.append(rec)

    # -- tasks ---------------------------------------------------------------
    @property
    def tasks(self) -> dict[str, SimTask]:
        """Snapshot of all tasks by id."""
        with self._lock:
            return dict(self._tasks)

    def task(self, task_id: str) -> SimTask:
        """The task ``task_id`` (KeyError if unknown)."""
        with self._lock:
            return self._tasks[task_id]

    def wait_for_callbacks(self, count: int = 1, timeout: float = 5.0) -> list[tuple[str, dict[str, Any], int | str]]:
        """Wait until at least ``count`` callbacks were attempted; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.callbacks) >= count:
                break
            time.sleep(0.01)
        return self.callbacks

    @property
    def callbacks(self) -> list[tuple[str, dict[str, Any], int | str]]:
        """``(url, payload, http_status or exception text)`` per callback POST."""
        with self._lock:
            return list(self._callbacks)

    # -- faults --------------------------------------------------------------
    def inject(self, endpoint: str, times: int | None = 1, **fault: Any) -> Fault:
        """Make the next ``times`` requests to ``endpoint`` misbehave (None = forever).

        ``endpoint``: "createTask", "recordInfo", "credit", "image", "other" or
        "*". ``fault`` is one kind; kinds marked (*) replace processing, so
        nothing is created or billed:

        * ``code=N`` (*) HTTP 200 + ``{"code": N, "msg": ..., "data": null}``;
          options ``http_status``, ``retry_after`` (header), ``msg`` (text).
        * ``http_status=S`` / ``html=True`` (*) nginx-style HTML error page.
        * ``delay=SECONDS`` sleep, then answer normally (combinable).
        * ``drop=True`` (*) close the connection without answering.
        * ``drop_after=True`` process (createTask: create and bill), then close.
        * ``malformed=True`` (*) HTTP 200 with truncated JSON; for images a
          corrupt PNG with a consistent Content-Length (processed).
        * ``truncate=True`` process, send full Content-Length but half the body.
        * ``redirect=URL`` (*) 302 to URL.
        * ``content_type=CT`` process, answer with that Content-Type.
        * ``expired=True`` (*) 404 page, as for an expired image URL.
        """
        return self._faults.add(make_fault(endpoint, times, fault))

    def clear_faults(self) -> None:
        """Remove all pending faults."""
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Pending faults."""
        return self._faults.pending

    # -- used by the HTTP handler -----------------------------------------------
    def _balance_number(self) -> float | int:
        value = round(self.credits, 4)
        return int(value) if value.is_integer() else value

    def _create_task(self, body: Any, api_key: str) -> tuple[int, str, Any]:
        errors = validate_create_body(body)
        if errors:
            return 422, "; ".join(errors), None
        num_images = int(body["input"].get("num_images", "1"))
        with self._lock:
            cost = self.cost_per_image * num_images
            if self._credits < cost:
                return (
                    402,
                    (
                        f"The current credits are insufficient. Please top up. "
                        f"(balance {self._balance_number()}, this task needs {cost:g})"
                    ),
                    None,
                )
            try:
                outcome = Outcome.parse(self.next_outcomes[0]) if self.next_outcomes else Outcome()
            except (ValueError, TypeError) as exc:
                self.next_outcomes.pop(0)
                return 500, f"simulator: bad next_outcomes entry: {exc}", None
            if self.next_outcomes:
                self.next_outcomes.pop(0)
            queue = outcome.queue_time
            if queue is None:
                queue = sample_duration(self._rng, self.queue_time)
            gen = outcome.generation_time
            if gen is None:
                gen = sample_duration(self._rng, self.generation_time)
            now_wall = time.time()
            task_id = f"task_google_{int(now_wall * 1000):013d}{next(self._counter)}"
            task = SimTask(
                task_id=task_id,
                param=body,
                param_json=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                api_key=api_key,
                create_time=now_wall,
                create_mono=time.monotonic(),
                queue_duration=queue,
                generation_duration=gen,
                image_size=image_size(body["input"].get("aspect_ratio", "1:1"), self.image_scale),
                token=secrets.token_urlsafe(18),
                base_url=self.url,
                cost=cost,
                nonce=secrets.token_hex(8),
                outcome=outcome,
            )
            self._credits -= cost
            self._tasks[task_id] = task
            self._tokens[task.token] = task_id
            if task.callback_url:
                heapq.heappush(self._schedule, (task.complete_mono, next(self._schedule_seq), task_id))
                self._schedule_cv.notify_all()
        return 200, "success", {"taskId": task_id}

    def _record_data(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            task = self._tasks.get(task_id)
        return None if task is None else task.record_data()

    def _image_bytes(self, token: str, name: str) -> bytes | None:
        with self._lock:
            task = self._tasks.get(self._tokens.get(token, ""))
        match = _IMAGE_NAME.fullmatch(name)
        if task is None or match is None:
            return None
        index = int(match.group(1))
        now = time.monotonic()
        if index > task.num_images or task.state_at(now) != SUCCESS:
            return None
        if now > task.complete_mono + self.url_ttl:
            return None
        seed_material = f"seed:{task.seed}" if task.seed else f"task:{task.nonce}"
        key = image_key(task.prompt, task.negative_prompt, task.aspect_ratio, seed_material, index, task.image_size)
        return self._images.get(key, task.image_size, task.prompt)

    # -- callbacks -------------------------------------------------------------
    def _run_scheduler(self) -> None:
        with self._schedule_cv:
            while not self._stopping.is_set():
                if not self._schedule:
                    self._schedule_cv.wait()
                    continue
                due, _, task_id = self._schedule[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._schedule_cv.wait(delay)
                    continue
                heapq.heappop(self._schedule)
                task = self._tasks[task_id]
                threading.Thread(target=self._deliver, args=(task,), name="apikley-sim-post", daemon=True).start()

    def _deliver(self, task: SimTask) -> None:
        url = task.callback_url or ""
        data = task.record_data(max(time.monotonic(), task.complete_mono))
        if data["state"] == SUCCESS:
            payload = {"code": 200, "msg": "Image generated successfully.", "data": data}
        else:
            payload = {"code": 501, "msg": data["failMsg"] or "Generation failed", "data": data}
        request = urllib.request.Request(
            url,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "Apikley-Callback/1.0"},
            method="POST",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        result: int | str
        try:
            with opener.open(request, timeout=self.callback_timeout) as response:
                result = response.status
        except urllib.error.HTTPError as exc:
            result = exc.code
        except Exception as exc:  # noqa: BLE001 - callbacks must never break the simulator
            result = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._callbacks.append((url, payload, result))
