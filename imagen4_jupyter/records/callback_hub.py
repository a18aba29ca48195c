"""Callbacks for a session (opt in, for hosts the service can reach): `Session.enable_callbacks`.

A `CallbackReceiver` (api/callbacks.py) listens in a background thread. Every createTask of the session's client
gets a `callBackUrl` with a one-time token of its own (`url_for`, the client's `callback_hints`; a request's own
callback URL wins, and then no hint comes for it). The token is tied to the task once createTask answers
(`created`); the task's status checks then become a sparse safety net (the schedule stretched), and each
accepted callback is only a hint: `poller.poke(task_id)` checks the task at once with recordInfo, never taking
the callback's body as the result. Hints for tasks this kernel does not follow are ignored; repeats coalesce
(the poller runs at most one extra check per task).

"Outcome unknown" (the createTask answer was lost, so no task id): the request keeps its token, and the
`outcome_unknown` event in the history names it by a digest (`callback_ref`, never the token). A later callback
with that token names the task: once recordInfo confirms that the task's parameters are that request's, the
history gets a `submitted` event for it (`resolves`: the digest) and the session follows it. No second task is
created and nothing is guessed.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..api import errors as E
from ..api.callbacks import CallbackReceiver, Hint, unreachable_reason
from ..api.job import Job
from ..api.request import GenerationRequest
from .history import History
from .spend import Spending

if TYPE_CHECKING:
    from ..api.client import Imagen4Client
    from ..api.poller import Poller

STRETCH = 4.0  # status checks of a task whose callback will come: the schedule's delays times this
PENDING_TTL = 3600.0  # seconds a token waits for its createTask answer before it is forgotten
WEBHOOK_KEY_ENV = "APIKLEY_WEBHOOK_KEY"


class HubOwner(Protocol):
    """What the hub needs from its session."""

    history: History
    jobs: dict[str, Job]
    spending: Spending

    @property
    def client(self) -> Imagen4Client: ...

    def follow(self, task_id: str, request: GenerationRequest | None, *, created_at: float | None = ...,
               cost: tuple[float, bool] | None = ...) -> Job: ...

    def subscribe(self, fn: Callable[[Job], None]) -> None: ...

    def unsubscribe(self, fn: Callable[[Job], None]) -> None: ...


def parse_listen(listen: str) -> tuple[str, int]:
    """`"127.0.0.1:8765"`, `"0.0.0.0:8765"`, `":8765"` or `"8765"` -> (host, port); a bad one is a
    ConfigurationError. No host means loopback: the receiver listens only where the user says."""
    host, _, port = str(listen).strip().rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise E.ConfigurationError(f"callback_listen must look like 127.0.0.1:8765 (host:port), not {listen!r}.")
    return host.strip("[]") or "127.0.0.1", number


def exposure(host: str) -> str | None:
    """What listening on `host` opens to others (one line), or None for a loopback address."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"the receiver listens on {host}, open to every network this machine is on: anyone who reaches the "
            "port can send POSTs (unknown tokens are refused; a flood can delay genuine callbacks, never send "
            "anything or show your key). Narrowest: listen on 127.0.0.1 behind a tunnel or reverse proxy")


def ref_of(token: str) -> str:
    """What the history keeps of a token: a digest that names it without letting anyone use it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def resolved_refs(history: History) -> set[str]:
    """The `callback_ref`s of outcome-unknown requests that a callback later tied to their task (read only when
    the history has such requests)."""
    if not history.unknown:
        return set()
    return {ev["resolves"] for ev in history.iter_events()
            if ev.get("event") == "submitted" and isinstance(ev.get("resolves"), str)}


class CallbackHub:
    """One session's callback receiver and what its tokens stand for. Thread-safe."""

    def __init__(self, owner: HubOwner, public_url: str | None = None, *, listen: str = "127.0.0.1:0",
                 webhook_key: str | None = None, stretch: float = STRETCH):
        host, port = parse_listen(listen)
        self.settings = (listen, public_url or None, webhook_key)  # what it was made for (`matches`)
        self.exposure = exposure(host)  # what the listen address opens to others, or None (loopback)
        self.owner = owner
        self.stretch = stretch
        self._lock = threading.Lock()
        self._pending: dict[int, list[tuple[GenerationRequest, str, float]]] = {}  # id(request) -> tokens sent
        self._tasks: dict[str, tuple[str, Poller]] = {}  # token -> (task id, the poller following it)
        self._unknown: dict[str, tuple[GenerationRequest, dict, float]] = {}  # token -> (request, event, when)
        self._early: dict[str, str] = {}  # token -> task id a hint named before the createTask answer came
        self.hints = 0  # accepted callbacks
        self.ignored = 0  # accepted but for no task this kernel follows (or not its token's task)
        self.resolved: list[str] = []  # task ids found through a callback after an unknown outcome
        key = webhook_key if webhook_key is not None else os.environ.get(WEBHOOK_KEY_ENV) or None
        self.receiver = CallbackReceiver(public_url or "http://127.0.0.1", self.on_hint, host=host, port=port,
                                         webhook_key=key)
        if not public_url:  # the listen address itself (a simulator, or a host reached directly)
            bound, bound_port = self.receiver.address
            shown = "127.0.0.1" if bound in ("0.0.0.0", "::", "") else bound
            self.receiver.public_url = f"http://{shown}:{bound_port}"
        #: Why the service cannot reach the callback URL (a loopback or private address), else None.
        self.unreachable = unreachable_reason(self.receiver.public_url)
        self.receiver.start()
        owner.subscribe(self._heard)  # every new job of the session, before its poller follows it

    @property
    def public_url(self) -> str:
        return self.receiver.public_url

    def matches(self, listen: str, public_url: str | None, webhook_key: str | None) -> bool:
        """True while running with exactly these settings (setting them again starts no second receiver)."""
        return self.receiver.running and self.settings == (listen, public_url or None, webhook_key)

    @property
    def signed(self) -> bool:
        """True when callbacks must carry a valid signature (a webhook key is set; it is never shown)."""
        return self.receiver.webhook_key is not None

    def __repr__(self) -> str:
        return (f"CallbackHub({self.public_url!r}, listening on {':'.join(map(str, self.receiver.address))}, "
                f"{'signed' if self.signed else 'unsigned'}, hints={self.hints}, ignored={self.ignored})")

    def stop(self) -> None:
        """Stop listening; the tasks it followed go back to their schedule's full rate from their next check."""
        self.owner.unsubscribe(self._heard)
        self.receiver.stop()
        with self._lock:
            self._pending.clear()
            followed = list(self._tasks.values())
            self._tasks.clear()
        for task_id, poller in followed:
            poller.expect_callback(task_id, 1.0)

    # -- the client's side (createTask) -----------------------------------------------------------
    def url_for(self, request: GenerationRequest) -> str | None:
        """A callBackUrl with a fresh one-time token for this createTask (`Imagen4Client.callback_hints`); None
        once stopped."""
        if not self.receiver.running:
            return None
        url, token = self.receiver.new_url(request.key())
        now = time.monotonic()
        with self._lock:
            for ident in [i for i, sent in self._pending.items() if sent[0][2] < now - PENDING_TTL]:
                for _, old, _ in self._pending.pop(ident):
                    self.receiver.tokens.pop(old, None)
            self._pending.setdefault(id(request), []).append((request, token, now))
        return url

    def _take(self, request: GenerationRequest | None) -> str | None:
        """The token sent with this very request object's createTask (lock held)."""
        sent = self._pending.get(id(request), [])
        for i, (req, token, _) in enumerate(sent):
            if req is request:
                del sent[i]
                if not sent:
                    self._pending.pop(id(request), None)
                return token
        return None

    def _heard(self, job: Job) -> None:
        """A session listener: a new job whose createTask carried a token of ours."""
        if id(job.request) in self._pending:
            self.created(job)

    def created(self, job: Job) -> None:
        """createTask answered with `job.task_id`: its token now stands for that task (before polling starts)."""
        poller = self.owner.client.poller
        task_id = job.task_id
        assert task_id is not None  # createTask answered: the service named the task
        with self._lock:
            token = self._take(job.request)
            if token is None:
                return
            self._tasks[token] = (task_id, poller)
            early = self._early.pop(token, None)
        poller.expect_callback(task_id, self.stretch)
        if early == task_id:  # the callback came before the createTask answer: check as soon as tracked
            poller.call_later(0.0, lambda: poller.poke(task_id))

    def outcome_unknown(self, request: GenerationRequest, event: dict) -> dict:
        """The createTask answer was lost: keep the request's token, and return the history event naming it."""
        with self._lock:
            token = self._take(request)
            if token is None:
                return event
            event = {**event, "callback_ref": ref_of(token)}
            self._unknown[token] = (request, event, time.time())
            early = self._early.pop(token, None)
        if early is not None:
            self._resolve_soon(token, early, signed=self.signed)
        return event

    # -- the receiver's side (its handler threads) -------------------------------------------------
    def on_hint(self, hint: Hint) -> None:
        """An accepted callback: check its task at once, or find the task of an unknown outcome."""
        with self._lock:
            self.hints += 1
            followed = self._tasks.get(hint.token)
            unknown = hint.token in self._unknown
            if followed is None and not unknown:
                if any(token == hint.token for sent in self._pending.values() for _, token, _ in sent):
                    self._early[hint.token] = hint.task_id  # createTask has not answered yet
                else:
                    self.ignored += 1
                return
        if unknown:
            self._resolve_soon(hint.token, hint.task_id, signed=hint.signed)
            return
        assert followed is not None  # neither an unknown outcome nor unfollowed: returned above
        ours = followed[0] == hint.task_id
        # the body's figures (consumeCredits, remainedCredits) are not passed on: signed or not, they are the
        # sender's word (the signature covers only the task id and time), never a measured cost or balance
        if not ours or not followed[1].poke(hint.task_id):
            with self._lock:  # another task's id, or a task this kernel no longer follows
                self.ignored += 1
                if ours:
                    self._tasks.pop(hint.token, None)

    def _resolve_soon(self, token: str, task_id: str, *, signed: bool) -> None:
        self.owner.client.poller.call_later(0.0, lambda: self._resolve(token, task_id, signed))

    def _resolve(self, token: str, task_id: str, signed: bool) -> None:
        """On a poller worker: confirm with recordInfo that `task_id` is the unknown request's task, then
        record and follow it."""
        with self._lock:
            entry = self._unknown.pop(token, None)
        if entry is None:
            return
        request, event, when = entry
        client = self.owner.client
        try:
            record = client.get_task(task_id)
            sent = GenerationRequest.from_payload(record.param) if record.param else None
        except (E.Imagen4Error, ValueError, TypeError, KeyError):
            sent, record = None, None
        same = sent.key() == request.key() if sent is not None else (record is not None and signed)
        if not same:  # not that request's task: keep waiting for the genuine callback
            with self._lock:
                self._unknown[token] = entry
                self.ignored += 1
            return
        fields = {k: v for k, v in event.items() if k not in ("event", "message", "callback_ref")}
        self.owner.history.append({"event": "submitted", "task_id": task_id, **fields,
                                   "resolves": event["callback_ref"], "found_by": "callback"})
        self.owner.follow(task_id, request, created_at=when)
        with self._lock:
            self._tasks[token] = (task_id, client.poller)
            self.resolved.append(task_id)
        client.poller.poke(task_id)
