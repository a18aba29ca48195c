"""HTTP client for Apikley's task API: envelope decoding, error mapping, retries. The body `code` decides the
outcome (an HTTP 200 can carry 429). Status checks and downloads are retried; `createTask` is never resent once
it may have reached the service (no idempotency key)."""
from __future__ import annotations

import json as jsonlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import downloads as D
from . import errors as E
from .credentials import DEFAULT_BASE_URL, check_base_url, is_loopback, refuse_key_leak, remember_secret
from .job import Job, Ledger
from .pacing import ENV as LIMITS_ENV
from .pacing import Limits, Pacer, limits_from_env, shared_pacer
from .poller import Poller
from .request import GenerationRequest
from .schedules import RetryPolicy, Schedule, SmartSchedule, parse_retry_after
from .sending import Sender
from .store import ImageStore
from .task import Result, TaskRecord

if TYPE_CHECKING:  # requests (and urllib3) cost ~55 ms to import: loaded with the first client, not by %load_ext
    import requests

    from .callbacks import CallbackHints

CREATE_PATH = "/api/v1/jobs/createTask"
RECORD_PATH = "/api/v1/jobs/recordInfo"
CREDIT_PATH = "/api/v1/chat/credit"
DOWNLOAD_URL_PATH = "/api/v1/common/download-url"
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # an API answer is a few KB; anything near this is not one
# a 500 whose message reads like a validation error (the live "This field is required"): asking again is useless
VALIDATION_500 = re.compile(r"\b(required|missing|invalid|must be|not allowed|validation)\b", re.IGNORECASE)
TASK_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
USER_AGENT = "imagen4-jupyter/0.1"
SIMULATOR_HEADER = "X-Apikley-Simulator"  # on every simulator answer (spelled the same in simulator/backend.py)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagen4_jupyter" / "images"


def _not_sent(exc: BaseException) -> bool:
    """True if the request certainly never reached the server (connection refused, connect timeout).
    The one not-sent test: a TransportError built from such a failure carries `not_sent=True`."""
    import requests
    import urllib3.exceptions as U

    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (requests.ConnectTimeout, U.NewConnectionError, U.ConnectTimeoutError,
                          ConnectionRefusedError)):
            return True
        if isinstance(e, BaseException):
            stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])
    return False


class Imagen4Client:
    """Talks to Apikley (or the simulator). Safe to share between threads.

    `submit()` creates a task and returns a `Job` at once; a background poller follows it and downloads
    its images into `cache_dir` (content-addressed). `generate()` is submit + wait.
    """

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 timeout: float | tuple[float, float] = (5.0, 30.0), schedule: Schedule | None = None,
                 retry: RetryPolicy | None = None, cache_dir: str | os.PathLike | None = None,
                 allow_insecure_http: bool | None = None, max_workers: int = 3,
                 max_download_bytes: int = 50 * 1024 * 1024, limits: Limits | None = None,
                 request_deadline: float = 60.0, download_deadline: float = 300.0):
        import requests

        if allow_insecure_http is None:
            allow_insecure_http = os.environ.get("APIKLEY_ALLOW_INSECURE_HTTP", "") in ("1", "true", "yes")
        self.base_url = check_base_url(base_url or os.environ.get("APIKLEY_BASE_URL") or DEFAULT_BASE_URL,
                                       allow_insecure_http=allow_insecure_http)
        self.__key = (api_key if api_key is not None else os.environ.get("APIKLEY_API_KEY", "")).strip()
        remember_secret(self.__key)  # never sent but in the Authorization header (`refuse_key_leak`)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.store = ImageStore(cache_dir or default_cache_dir())
        self.max_download_bytes = max_download_bytes
        # wall-clock limits of one whole answer (`timeout` only bounds each read): API calls, image downloads
        self.request_deadline = request_deadline
        self.download_deadline = download_deadline
        self.schedule = schedule or SmartSchedule()  # the provider's advice until it has learned durations
        self._http = requests.Session()
        self._http.headers["User-Agent"] = USER_AGENT
        self._http.trust_env = False if is_loopback(urlsplit(self.base_url).hostname or "") else True
        # With trust_env, requests would let a ~/.netrc entry replace our Authorization header (and send
        # netrc passwords to image hosts); a session-level no-op auth turns that lookup off.
        self._http.auth = _keep_headers
        # The documented limits (20 createTask per 10 s, 10 recordInfo per s), shared by every client of this
        # process on the same service and key; `Limits.off()` (or APIKLEY_LIMITS=off) for a service without them.
        limits = limits if limits is not None else limits_from_env(os.environ.get(LIMITS_ENV))
        self.pacer: Pacer = shared_pacer(self.base_url, self.__key, limits)
        self.poller = Poller(self, max_workers=max_workers)
        # every createTask leaves from the sender's own threads, in a create slot taken as it leaves
        self.sender = Sender(self.create_task, window=self.pacer.create, retry=lambda: self.retry,
                             follow=self.poller.track)
        self._in_flight: dict[str, Job] = {}  # request key -> the live job of a seeded request (followed, not resent)
        self._in_flight_lock = threading.Lock()

    simulated: bool | None = None  # None until the first answer, then whether it carried SIMULATOR_HEADER
    callback_hints: CallbackHints | None = None  # gives each createTask its callBackUrl (Session.enable_callbacks)

    def payload_for(self, request: GenerationRequest) -> dict:
        """The createTask body; a callBackUrl from `callback_hints` unless the request names its own (that wins)."""
        hints = self.callback_hints
        url = hints.url_for(request) if hints is not None and not request.callback_url else None
        return {**request.to_payload(), "callBackUrl": url} if url else request.to_payload()

    def __repr__(self) -> str:
        return f"Imagen4Client(base_url={self.base_url!r}, api_key={'set' if self.__key else 'missing'})"

    @property
    def has_key(self) -> bool:
        return bool(self.__key)

    # -- the three endpoints ------------------------------------------------------------------
    def create_task(self, request: GenerationRequest, *, retry_rate_limits: bool = True,
                    slot_taken: bool = False, on_step: Callable[[str], Any] | None = None) -> str:
        """POST createTask; return the task id. Never resent after an ambiguous failure.

        Resent only when it certainly created nothing (a 429/455 answer, a connection never made), after the
        pause the client's `retry` policy gives. `retry_rate_limits=False` makes one attempt and raises those
        at once, for callers with their own backoff (a batch's shared pause). Each attempt waits for a slot
        under the create limit (`slot_taken`: the caller already took one for the first attempt). `on_step`
        hears when a retry waits (nothing created) and when it is sent.
        """
        data = self._call("POST", CREATE_PATH, json=self.payload_for(request), idempotent=False,
                          retry=retry_rate_limits, pace="create", slot_taken=slot_taken, on_step=on_step)
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise E.OutcomeUnknownError("createTask answered success but without a taskId; a task may have "
                                        "been created. It was not resent.")
        return task_id

    def get_task(self, task_id: str, *, retry: bool = True, slot_taken: bool = False) -> TaskRecord:
        """GET recordInfo and parse the record; retried on 429/455/5xx and connection failures unless
        `retry=False`. Each request waits for a slot under the query limit (`slot_taken`: already taken)."""
        params = {"taskId": check_task_id(task_id)}
        return TaskRecord.from_data(self._call("GET", RECORD_PATH, params=params, task_id=task_id, retry=retry,
                                               pace="query", slot_taken=slot_taken), task_id)

    def get_task_once(self, task_id: str) -> TaskRecord:
        """One recordInfo request, no retrying, in a query slot the caller took (the poller's way)."""
        return self.get_task(task_id, retry=False, slot_taken=True)

    def query_slot(self) -> float:
        """Take a recordInfo slot if one is free now (0.0), else the seconds until one frees (none taken)."""
        return self.pacer.try_query()

    def credits(self) -> float:
        """The account's remaining credits."""
        data = self._call("GET", CREDIT_PATH)
        if isinstance(data, dict):
            data = data.get("credits", data.get("balance"))
        try:
            return float(data)
        except (TypeError, ValueError):
            raise E.ProtocolError(f"The credit endpoint answered {data!r}, not a number.") from None

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, prompt: str, *, negative_prompt: str | None = None, aspect_ratio: str | None = None,
               num_images: int | str = 1, seed: str | int | None = None, callback_url: str | None = None,
               model: str | None = None, force: bool = False) -> Job:
        """Validate for the model (`standard`, `fast`, `ultra`; `aspect_ratio=None` is its own default), create
        the task, and return its `Job`, which the background poller follows. The createTask leaves from the
        client's sender under the create limit; this call returns once the service has answered (the job has its
        `task_id`), and raises if it created nothing. A seeded request identical to one of this client's still
        in flight is followed, not sent again (`force=True`: a new task). To queue many requests without
        waiting for each answer, use a `Session` or `submit_request(request)`."""
        req = GenerationRequest.create(prompt, negative_prompt=negative_prompt, aspect_ratio=aspect_ratio,
                                       num_images=num_images, seed=seed, callback_url=callback_url, model=model)
        return self.submit_request(req, follow=not force, queue=False)

    def in_flight(self, request: GenerationRequest) -> Job | None:
        """This client's live job for exactly this seeded request (queued, being sent, or running), if any: the
        one to follow instead of sending the request again (there is no idempotency key)."""
        if request.seed is None:  # an unseeded request asks for new random images each time
            return None
        with self._in_flight_lock:
            job = self._in_flight.get(request.key())
        return job if job is not None and not job.done() else None

    def submit_request(self, request: GenerationRequest, *, on_created: Callable[[Job], Any] | None = None,
                       retry_rate_limits: bool = True, queue: bool = True, ledger: Ledger | None = None,
                       local_id: str | None = None, follow: bool = True) -> Job:
        """Queue a createTask for a validated request; `on_created(job)` runs before polling starts.

        The Job comes back at once (stage `queued`, no task id yet) and the sender sends it when a slot under the
        create limit is free. `ledger` writes each move of its life (a session's writes the history; the
        `queued` move first, in this thread: if it cannot be written, the OSError propagates and nothing is
        sent). `queue=False` waits here until the request has left and been answered, and raises its error if
        it created nothing (a batch's threads, which pause together on a 429). `retry_rate_limits=False`: a
        429/455 ends the job at once instead of waiting and sending it again. `follow`: a seeded request
        identical to a live one of this client is followed (that job is returned).
        """
        if follow and (live := self.in_flight(request)) is not None:
            return live
        ledger = ledger or (Ledger() if on_created is None else _OnCreated(on_created))
        job = self.sender.enqueue(request, ledger, retry_rate_limits=retry_rate_limits, local_id=local_id)
        if request.seed is not None:
            key = request.key()
            with self._in_flight_lock:
                self._in_flight[key] = job
            job.add_done_callback(lambda j: self._forget(key, j))
        if not queue:
            self.wait_sent(job)
            if job.task_id is None and job.error is not None:
                raise job.error
        return job

    def wait_sent(self, job: Job, timeout: float | None = None) -> bool:
        """Block until `job`'s createTask has left and been answered (False on timeout). Interrupted while it
        still waits, the request is withdrawn and never sent; once it is leaving, its outcome is recorded as
        usual. The KeyboardInterrupt is raised again either way."""
        try:
            return self.sender.wait_left(job, timeout)
        except KeyboardInterrupt:
            self.sender.cancel(job, "interrupted")
            raise

    def cancel(self, job: Job, why: str = "cancelled") -> bool:
        """Withdraw a queued request that has not left yet (never sent, recorded as cancelled by its ledger);
        False once it is being sent or has an answer: a task cannot be cancelled on the service."""
        return self.sender.cancel(job, why)

    def _forget(self, key: str, job: Job) -> None:
        with self._in_flight_lock:
            if self._in_flight.get(key) is job:
                del self._in_flight[key]

    def track(self, task_id: str, request: GenerationRequest | None = None, *,
              created_at: float | None = None, ledger: Ledger | None = None) -> Job:
        """Follow an existing task (for example one left unfinished by a kernel restart); creates nothing.
        `ledger` writes the moves of its life from here on (a session's writes the history)."""
        job = Job(check_task_id(task_id), request, created_at=created_at, ledger=ledger)
        self.poller.track(job)
        return job

    def generate(self, prompt: str, *, negative_prompt: str | None = None, aspect_ratio: str | None = None,
                 num_images: int | str = 1, seed: str | int | None = None, callback_url: str | None = None,
                 model: str | None = None, timeout: float | None = None) -> Result:
        """Submit and wait: returns the Result with downloaded images, or raises. The keywords are `submit()`'s;
        `timeout` bounds the wait (an `Imagen4TimeoutError` then; the task keeps running on the service)."""
        job = self.submit(prompt, negative_prompt=negative_prompt, aspect_ratio=aspect_ratio, num_images=num_images,
                          seed=seed, callback_url=callback_url, model=model)
        try:
            return job.result(timeout)
        except KeyboardInterrupt:  # still waiting to be sent: withdrawn, never sent
            self.sender.cancel(job, "interrupted")
            raise

    def close(self) -> None:
        """Stop sending (requests still waiting end as cancelled, never sent) and the poller (jobs still running
        end with an Imagen4TimeoutError), and close the connections."""
        self.sender.stop()
        self.poller.stop()
        self._http.close()

    def __enter__(self) -> Imagen4Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
              idempotent: bool = True, task_id: str | None = None, retry: bool = True, pace: str | None = None,
              slot_taken: bool = False, on_step: Callable[[str], Any] | None = None) -> Any:
        """One API call with retries; returns the envelope's `data` or raises the mapped error. `pace`: the
        limit each attempt waits under ("create" or "query"), the first one's slot already taken if
        `slot_taken`. `on_step("waiting")` before a retry's pause, `on_step("sending")` before its request."""
        attempt = 0
        while True:
            if pace is not None and not (slot_taken and attempt == 0):
                delay = self.pacer.create_delay() if pace == "create" else self.pacer.query_delay()
                if delay > 0:
                    time.sleep(delay)
            if attempt and on_step is not None:
                on_step("sending")
            try:
                return self._call_once(method, path, params=params, json=json, idempotent=idempotent,
                                       task_id=task_id)
            except E.Imagen4Error as err:
                retry_ok = err.retryable and (idempotent or err.not_sent or err.code in (429, 455))
                attempt += 1
                if not (retry and retry_ok and attempt < self.retry.attempts):
                    raise
                if on_step is not None:  # this attempt certainly created nothing
                    on_step("waiting")
                time.sleep(self.retry.delay(attempt - 1, err.retry_after))

    def _call_once(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                   idempotent: bool = True, task_id: str | None = None) -> Any:
        if not self.__key:
            raise E.ConfigurationError("No API key. Set the APIKLEY_API_KEY environment variable (or pass "
                                       "api_key=...) to a key from the Apikley key management page.")
        if any(c.isspace() or not c.isprintable() or not c.isascii() for c in self.__key):
            raise E.ConfigurationError("The API key contains spaces, control characters or non-ASCII letters; "
                                       "check APIKLEY_API_KEY.")
        import requests

        refuse_key_leak(self.base_url + path, params, json)  # the key goes only in the Authorization header
        where = path.rsplit("/", 1)[-1]
        started = time.monotonic()
        try:
            with self._http.request(method, self.base_url + path, params=params, json=json,
                                    headers={"Authorization": f"Bearer {self.__key}"}, timeout=self.timeout,
                                    allow_redirects=False, stream=True) as resp:
                raw = D.read_body(resp, deadline=started + self.request_deadline, limit=MAX_ANSWER_BYTES)
        except requests.RequestException as exc:
            raise self._transport_error(exc, where, idempotent, task_id) from None
        except D.TooSlow:
            raise D.slow_answer(where, self.request_deadline, idempotent, task_id) from None
        except D.TooLarge:
            raise E.ProtocolError(f"{where} answered more than {MAX_ANSWER_BYTES // (1024 * 1024)} MB: this is "
                                  "not an API answer. Check APIKLEY_BASE_URL.", task_id=task_id) from None
        return self._decode(resp, raw, where, idempotent, task_id)

    def _transport_error(self, exc: requests.RequestException, where: str, idempotent: bool,
                         task_id: str | None) -> E.Imagen4Error:
        import requests

        kind = "timed out" if isinstance(exc, requests.Timeout) else "failed"
        if _not_sent(exc):
            return E.TransportError(f"Could not connect to {self.base_url} ({where} {kind}). Check the network "
                                    "and APIKLEY_BASE_URL.", task_id=task_id, not_sent=True)
        if not idempotent:
            return E.OutcomeUnknownError(f"The {where} request {kind} after it was sent "
                                         f"({type(exc).__name__}). " + E.OutcomeUnknownError.hint, task_id=task_id)
        return E.TransportError(f"The {where} request {kind} ({type(exc).__name__}); it will be retried.",
                                task_id=task_id)

    def _decode(self, resp: requests.Response, raw: bytes, where: str, idempotent: bool,
                task_id: str | None) -> Any:
        self.simulated = SIMULATOR_HEADER in resp.headers  # taken from every answer (errors and 429s too)
        status = resp.status_code
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        try:
            body = jsonlib.loads(raw)
        except ValueError:  # UnicodeDecodeError included
            body = None
        if not isinstance(body, dict) or "code" not in body:
            what = "invalid JSON" if body is None else "JSON without a `code` field"
            if 300 <= status < 400:
                raise E.ProtocolError(f"The service redirected {where} to {resp.headers.get('Location')!r}; "
                                      "check APIKLEY_BASE_URL.", task_id=task_id)
            if status == 401:
                raise E.AuthenticationError(task_id=task_id)
            if status == 404:
                # not the service's word on the task (a proxy's page, a wrong base URL): not final
                raise E.NotFoundError(f"{where} got HTTP 404 with {what}: this is probably not the Apikley API. "
                                      "Check APIKLEY_BASE_URL (and the task id).", task_id=task_id, code=404,
                                      final=False)
            if status == 429:
                raise E.RateLimitError(task_id=task_id, retry_after=retry_after)
            if not idempotent and status != 503:
                # The request reached something that answered garbage: a task may have been created.
                raise E.OutcomeUnknownError(f"{where} got HTTP {status} with {what}, so it is unknown whether a "
                                            "task was created. " + E.OutcomeUnknownError.hint, task_id=task_id)
            if status >= 500:
                raise E.ServerError(f"{where} got HTTP {status} with a non-JSON error page; the service is having "
                                    "trouble. Try again after a while.", task_id=task_id, code=status,
                                    retry_after=retry_after)
            raise E.ProtocolError(f"{where} answered HTTP {status} with {what}.", task_id=task_id)
        try:
            code = int(body["code"])
        except (TypeError, ValueError):
            raise E.ProtocolError(f"{where} answered with a non-numeric code {body.get('code')!r}.",
                                  task_id=task_id) from None
        message = body.get("msg") if body.get("msg") is not None else body.get("message")
        if code == 200:
            return body.get("data")
        if where == "recordInfo" and code == 422 and "recordinfo is null" in str(message).lower():
            raise E.NotFoundError("The service does not know this task (it answered 422 \"recordInfo is null\"). "
                                  "Check the task id, that it was created with this API key's account, and that "
                                  "it is less than 14 days old.", task_id=task_id, code=422)
        if code == 500 and message is not None and VALIDATION_500.search(str(message)):
            raise E.ServerError(f"{where} answered 500 with what reads as a validation error, not a passing fault, so "
                                "it was not retried; check the request's fields.", task_id=task_id, code=500,
                                service_message=str(message), retryable=False)
        raise E.error_for_code(code, str(message) if message is not None else None, task_id=task_id,
                               retry_after=retry_after)

    def fresh_link(self, url: str, *, task_id: str | None = None) -> str:
        """A temporary download link (valid ~20 minutes) for a result URL that has expired, from
        `POST /api/v1/common/download-url` (with the key). Raises the mapped error when refused."""
        data = self._call("POST", DOWNLOAD_URL_PATH, json={"url": url}, task_id=task_id)
        if not isinstance(data, str) or not data:
            raise E.ProtocolError(f"download-url answered success without a link ({type(data).__name__}).",
                                  task_id=task_id)
        return data

    def download(self, url: str, *, task_id: str | None = None) -> bytes:
        """GET an image URL (no credentials sent); checks status, type, size cap, completeness and the
        `download_deadline`. An expired URL (403/404/410) is downloaded again from a fresh link
        (`fresh_link`); when the service has none, a final DownloadError says it no longer serves the images."""
        def fetch(link: str) -> bytes:
            return D.fetch_image(self._http, link, timeout=self.timeout, deadline=self.download_deadline,
                                 max_bytes=self.max_download_bytes, task_id=task_id)

        return D.with_fresh_link(url, fetch, lambda: self.fresh_link(url, task_id=task_id), task_id)


class _OnCreated(Ledger):
    """A bare client's ledger that calls `on_created(job)` once the task exists, before polling starts."""

    def __init__(self, on_created: Callable[[Job], Any]):
        self.on_created = on_created

    def applied(self, job: Job, stage: str) -> None:
        if stage == "created":
            self.on_created(job)


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def check_task_id(task_id: Any) -> str:
    """Task ids are short tokens; anything else (`../`, spaces, slashes) is refused before sending."""
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id) or ".." in task_id:  # `$` allows a final \n
        raise E.InvalidRequestError(f"{str(task_id)[:60]!r} is not a valid task id (expected something like "
                                    "task_google_1765172350621).")
    return task_id
