"""The :class:`Simulator`: a local, faithful stand-in for the Apikley Imagen 4 API.

It implements :class:`~.backend.Backend`, the interface :mod:`.server` talks to; the dependency runs one
way (core -> server -> backend). Limits live in :mod:`.limits`, prices in :mod:`.billing`, links in
:mod:`.links`, callbacks in :mod:`.callbacks`, the model family in :mod:`.models`.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import threading
import time
from typing import Any

from .backend import Reply, envelope, json_reply
from .billing import Bank, Charge, as_number
from .callbacks import Callbacks, Delivery, envelope_for
from .faults import Fault, FaultSet, make_fault
from .images import image_size
from .limits import CREATE_LIMIT, QUERY_LIMIT, Limits, RateLimiter, WindowLimiter, max_in_window
from .links import DEFAULT_LINK_TTL, DEFAULT_RETENTION, EXPIRED_STATUSES, Target
from .media import Media
from .models import GENERATION_TIME, MODELS, QUEUE_TIME
from .server import SimHTTPServer
from .state import SUCCESS, Duration, Outcome, Recorded, SimTask, sample_duration
from .validation import missing_required, validate_create_body

HOST = "127.0.0.1"
DEFAULT_KEY = "test-key"


class Simulator:
    """Serve the Apikley Imagen 4 API on loopback, with scriptable behaviour.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Durations, ``url_ttl``,
    ``link_ttl``, ``retention``, ``expired_status``, ``api_keys``, ``enforce_limits``, the quirk
    switches, ``prices``, ``webhook_key`` and ``announce`` are plain attributes that may be changed while running;
    ``credits``, ``rate_limit``, ``create_limit`` and ``query_limit`` are properties. Durations are
    ``(min, max)`` uniform ranges or fixed numbers; by default they are realistic (1-4 s queued, 6-12 s
    generating for the standard model, times each model's ``speed``: see :mod:`.models`), and
    ``time_scale`` multiplies every task duration (``time_scale=0.01`` keeps those shapes at a hundredth
    of the time). The documented limits (20 createTask per 10 s per
    account, 10 recordInfo per second per key) are on by default: pass ``enforce_limits=False`` where a
    test needs speed. Every answer carries ``X-Apikley-Simulator`` so clients know it is a simulator;
    ``announce=False`` makes it pose as the real service.
    """

    def __init__(
        self,
        port: int = 0,
        api_keys: tuple[str, ...] | list[str] | None = (DEFAULT_KEY,),
        queue_time: Duration = QUEUE_TIME,
        generation_time: Duration = GENERATION_TIME,
        image_scale: float = 1.0,
        url_ttl: float = 86400.0,
        credits: float = 1_000_000.0,
        rate_limit: tuple[float, float] | None = None,
        random_seed: int = 0,
        cost_per_image: float | None = None,
        callback_timeout: float = 5.0,
        *,
        enforce_limits: bool = True,
        create_limit: tuple[float, float] = CREATE_LIMIT,
        query_limit: tuple[float, float] = QUERY_LIMIT,
        prices: dict[str, float] | None = None,
        auth_http_status: int = 200,
        unknown_task_code: int = 422,
        quirk_500_on_missing_field: bool = False,
        link_ttl: float = DEFAULT_LINK_TTL,
        retention: float = DEFAULT_RETENTION,
        expired_status: int = 404,
        download_url_enabled: bool = True,
        webhook_key: str | None = None,
        time_scale: float = 1.0,
        announce: bool = True,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be 0 or more (1.0: real time)")
        if expired_status not in EXPIRED_STATUSES:
            raise ValueError(f"expired_status must be one of {EXPIRED_STATUSES}")
        if unknown_task_code not in (404, 422):
            raise ValueError("unknown_task_code must be 422 (the live quirk) or 404")
        self.port = port
        if isinstance(api_keys, str):
            api_keys = (api_keys,)
        self.api_keys: tuple[str, ...] | None = tuple(api_keys) if api_keys is not None else None
        self.queue_time: Duration = queue_time
        self.generation_time: Duration = generation_time
        #: Multiplies every task's queue and generation time, sampled or scripted in ``next_outcomes``
        #: (not the link clocks ``url_ttl``, ``link_ttl``, ``retention``).
        self.time_scale = float(time_scale)
        self.image_scale = image_scale
        self.url_ttl = url_ttl
        self.link_ttl = link_ttl
        self.retention = retention
        self.expired_status = expired_status
        self.auth_http_status = auth_http_status
        self.unknown_task_code = unknown_task_code
        self.quirk_500_on_missing_field = quirk_500_on_missing_field
        self.download_url_enabled = download_url_enabled
        #: Every answer carries ``X-Apikley-Simulator`` (False: the simulator poses as the real service).
        self.announce = announce
        #: Per-task overrides; each new task pops the first entry.
        self.next_outcomes: list[dict[str, Any]] = []

        self._lock = threading.RLock()
        self._rng = random.Random(random_seed)
        #: Balance, prices and the ledger of charges.
        self.bank = Bank(credits, prices, cost_per_image)
        #: The 429 machinery: ``sim.limits.create`` / ``.query`` windows, ``.enforce`` (see :mod:`.limits`).
        self.limits = Limits(rate_limit, create_limit, query_limit, enforce_limits)
        self._faults = FaultSet()
        self._media = Media()
        self._tasks: dict[str, SimTask] = {}
        self._tokens: dict[str, str] = {}
        self._records: list[Recorded] = []
        #: Sends (and records) callbacks; ``webhook_key`` signs them.
        self.sender = Callbacks(self._prepare_callback, callback_timeout, webhook_key)
        self._counter = itertools.count(1)

        self._server: SimHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()
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
        self._serve_thread.start()
        self.sender.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            self._stopping.set()
        if server is None:
            return
        self.sender.stop()
        server.stop_serving()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=2)

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

    # -- settable state: properties over bank (credits, prices, ledger), limits (429s), sender (callbacks) --
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

    def max_in_window(self, endpoint: str, window: float) -> int:
        """The most requests to ``endpoint`` received within any ``window`` seconds (all of them, refused too)."""
        with self._lock:
            return max_in_window((r.time for r in self._records if r.endpoint == endpoint), window)

    def count_429(self, endpoint: str | None = None) -> int:
        """How many requests (to ``endpoint``, None = any) the limits answered 429 (injected faults not counted)."""
        return self.limits.count_429(endpoint)

    def reset_counts(self) -> None:
        """Forget recorded requests and 429 counts."""
        with self._lock:
            self._records.clear()
        self.limits.reset()

    # -- tasks and callbacks -----------------------------------------------------
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
        while time.monotonic() < deadline and len(self.sender.deliveries) < count:
            time.sleep(0.01)
        return self.callbacks

    @property
    def callbacks(self) -> list[tuple[str, dict[str, Any], int | str]]:
        """``(url, payload, http_status or exception text)`` per callback POST."""
        return [(d.url, d.payload, d.status) for d in self.sender.deliveries]

    @property
    def deliveries(self) -> list[Delivery]:
        """Every callback POST with the headers it carried (``url, payload, status, headers``)."""
        return self.sender.deliveries

    def send_callback(self, task_id: str, forge: str | None = None, url: str | None = None) -> Delivery:
        """POST ``task_id``'s callback now (to ``url`` or its ``callBackUrl``) and return the delivery.

        ``forge``: None (genuine, signed when ``webhook_key`` is set), "unsigned", "bad_signature",
        "stale" (validly signed an hour ago), "wrong_task" (signed for another task id) or "replay"
        (the task's last delivery again, with its old headers).
        """
        prepared = self._prepare_callback(task_id, require_url=url is None)
        if prepared is None:
            raise ValueError(f"{task_id} has no callBackUrl; pass url=")
        return self.sender.post(url or prepared[0], prepared[1], forge)

    def _prepare_callback(self, task_id: str, require_url: bool = True) -> tuple[str, dict[str, Any]] | None:
        task = self.task(task_id)
        if require_url and not task.callback_url:
            return None
        data = task.record_data(max(time.monotonic(), task.complete_mono))
        data["consumeCredits"] = as_number(task.cost)
        data["remainedCredits"] = self.balance()
        return task.callback_url or "", envelope_for(data)

    # -- faults --------------------------------------------------------------
    def inject(self, endpoint: str, times: int | None = 1, **fault: Any) -> Fault:
        """Make the next ``times`` requests to ``endpoint`` misbehave (None = forever).

        ``endpoint``: "createTask", "recordInfo", "credit", "downloadUrl", "image", "other" or "*".
        The kinds and their options are listed in docs/simulator.md and :mod:`.faults`.
        """
        return self._faults.add(make_fault(endpoint, times, fault))

    def clear_faults(self) -> None:
        """Remove all pending faults."""
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Pending faults."""
        return self._faults.pending

    # -- Backend: what the HTTP handler calls --------------------------------------
    def record_request(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes | None, endpoint: str
    ) -> None:
        rec = Recorded(method, path, query, headers, body, endpoint, time.monotonic())
        with self._lock:
            self._records.append(rec)

    def take_fault(self, endpoint: str) -> Fault | None:
        return self._faults.take(endpoint)

    def wait_stopping(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)

    def accepts_key(self, key: str) -> bool:
        return self.api_keys is None or key in self.api_keys

    def check_limits(self, endpoint: str, key: str) -> int | None:
        return self.limits.check(endpoint, key)

    def balance(self) -> float | int:
        return as_number(self.credits)

    def create_task(self, body: Any, api_key: str) -> tuple[int, str, Any]:
        """Validate, charge and create one task: ``(body code, msg, data)``."""
        if self.quirk_500_on_missing_field and missing_required(body):
            return 500, "This field is required", None
        errors = validate_create_body(body)
        if errors:
            return 422, "; ".join(errors), None
        spec = MODELS[body["model"]]
        inp = body["input"]
        num_images = int(inp.get("num_images", "1")) if spec.has_num_images else 1
        with self._lock:
            now_wall = time.time()
            task_id = f"task_google_{int(now_wall * 1000):013d}{next(self._counter)}"
            cost = self.bank.price(spec.name, num_images)
            refusal = self.bank.charge(task_id, spec.name, cost)
            if refusal is not None:
                return 402, refusal, None
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
                gen = sample_duration(self._rng, self.generation_time) * spec.speed
            queue, gen = queue * self.time_scale, gen * self.time_scale
            task = SimTask(
                task_id=task_id,
                param=body,
                param_json=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                api_key=api_key,
                create_time=now_wall,
                create_mono=time.monotonic(),
                queue_duration=queue,
                generation_duration=gen,
                image_size=image_size(inp.get("aspect_ratio", spec.default_aspect_ratio), self.image_scale),
                token=secrets.token_urlsafe(18),
                base_url=self.url,
                cost=cost,
                nonce=secrets.token_hex(8),
                outcome=outcome,
                default_aspect_ratio=spec.default_aspect_ratio,
            )
            self._tasks[task_id] = task
            self._tokens[task.token] = task_id
        if task.callback_url:
            self.sender.schedule(task_id, task.complete_mono)
        return 200, "success", {"taskId": task_id}

    def record_info(self, task_id: str) -> Reply:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is not None:
            return json_reply(envelope(200, "success", task.record_data(), "message"))
        if self.unknown_task_code == 404:
            return json_reply(envelope(404, "task not found", None, "message"))
        return json_reply(envelope(422, "recordInfo is null"))

    def _servable(self, target: Target, now: float) -> SimTask | None:
        """The finished task whose image ``target`` names, if it has that image."""
        with self._lock:
            task = self._tasks.get(self._tokens.get(target.token, ""))
        if task is None or target.index > task.served_images or task.state_at(now) != SUCCESS:
            return None
        return task

    def download_url(self, url: Any) -> tuple[int, str, Any]:
        """A fresh link for a result URL this simulator generated: ``(body code, msg, data)``."""
        return self._media.download_url(url, self.url, self._servable, self.retention, self.link_ttl)

    def image(self, path: str) -> Reply:
        """The bytes of a result URL or fresh link, or the 404 / expired page."""
        return self._media.image(path, self._servable, self.url_ttl, self.retention, self.expired_status)
