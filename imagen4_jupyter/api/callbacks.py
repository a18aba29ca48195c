"""A small receiver for the service's callbacks (opt in, for hosts the service can reach).

Each request gets a `callBackUrl` of its own: `<public URL>/<one-time token>`. A POST to it is only ever a
*hint* to check that task at once with `recordInfo`; its body is never taken as the result. A flood cannot
spend the query budget: bodies over `max_body` bytes are refused, unknown tokens are refused, and the
consumer ignores task ids it does not follow and coalesces repeats. With a webhook key (section 9 of the
service's docs) unsigned, badly signed and replayed POSTs are refused; signatures are compared in constant time.

The token also resolves "outcome unknown": if a createTask answer was lost but the task was created, its
callback names the task id, and the token says which request it belongs to.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .request import GenerationRequest

MAX_BODY = 64 * 1024
MAX_SKEW = 300.0  # seconds a signed timestamp may be off
SEEN = 4096  # signatures remembered against replays


@dataclass(frozen=True)
class Hint:
    """A callback that passed the checks: check `task_id` now. `token` names the request it was sent for."""

    task_id: str
    token: str
    signed: bool
    consume_credits: float | None = None  # what the body says the task cost (trusted only when signed)
    remained_credits: float | None = None  # and the balance after it


def _credits(data: dict, key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
        return None
    return float(value)


class CallbackHints(Protocol):
    """What the client asks for each createTask (`Imagen4Client.callback_hints`): a callBackUrl of its own, or
    None for none."""

    def url_for(self, request: GenerationRequest) -> str | None: ...


def unreachable_reason(public_url: str) -> str | None:
    """Why the service could not reach `public_url`, or None if it may (a laptop's loopback or LAN address)."""
    host = urlsplit(public_url).hostname or ""
    if host in ("localhost", ""):
        return f"the service cannot reach {host or public_url!r}: it is not an address on the internet"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified:
        return (f"the service cannot reach {host}: it is a loopback or private address. Use a server, a cloud "
                "VM or a tunnel with a public URL; polling goes on meanwhile")
    return None


def signature(key: str, task_id: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key, taskId + "." + timestamp)), as the service signs its callbacks."""
    mac = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


class CallbackReceiver:
    """Listens on `host:port` (a background thread) and calls `on_hint(Hint)` for each accepted POST."""

    def __init__(self, public_url: str, on_hint: Callable[[Hint], None], *, host: str = "127.0.0.1",
                 port: int = 0, webhook_key: str | None = None, max_body: int = MAX_BODY,
                 clock: Callable[[], float] = time.time):
        self.public_url = public_url.rstrip("/")
        self.on_hint = on_hint
        self.webhook_key = webhook_key or None
        self.max_body = max_body
        self.clock = clock
        self.tokens: dict[str, str | None] = {}  # token -> the request's key (or None once it has a task)
        self.refused: dict[str, int] = {}  # reason -> count
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="imagen4-callbacks", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._thread.is_alive() and not self._closed

    def start(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def new_url(self, request_key: str) -> tuple[str, str]:
        """(callBackUrl, token) for one createTask: a fresh one-time token in the path."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self.tokens[token] = request_key
        return f"{self.public_url}/{token}", token

    # -- checks (handler threads) ---------------------------------------------------------------
    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1

    def accept(self, token: str, body: bytes, headers: dict[str, str]) -> str | None:
        """None if accepted (and the hint passed on), else why it was refused."""
        with self._lock:
            known = token in self.tokens
        if not known:
            return "unknown token"
        try:
            doc = json.loads(body)
            data = doc.get("data") if isinstance(doc, dict) else None
            task_id = (data or {}).get("taskId") or (data or {}).get("task_id")
        except (ValueError, AttributeError):
            return "not JSON"
        if not isinstance(task_id, str) or not task_id or len(task_id) > 128:
            return "no task id"
        signed = False
        if self.webhook_key:
            stamp, sig = headers.get("x-webhook-timestamp", ""), headers.get("x-webhook-signature", "")
            if not stamp or not sig:
                return "unsigned"
            if not hmac.compare_digest(signature(self.webhook_key, task_id, stamp).encode(), sig.encode()):
                return "bad signature"
            try:
                skew = abs(self.clock() - float(stamp))
            except ValueError:
                return "bad timestamp"
            if skew > MAX_SKEW:
                return "stale timestamp"
            with self._lock:
                if sig in self._seen:
                    return "replayed"
                self._seen[sig] = None
                while len(self._seen) > SEEN:
                    self._seen.popitem(last=False)
            signed = True
        self.on_hint(Hint(task_id=task_id, token=token, signed=signed, consume_credits=_credits(data, "consumeCredits"),
                          remained_credits=_credits(data, "remainedCredits")))
        return None


def _handler(receiver: CallbackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "imagen4-callbacks"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            token = self.path.strip("/").rsplit("/", 1)[-1]
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > receiver.max_body:
                receiver.refuse("too large")
                self._answer(413)
                return
            body = self.rfile.read(length)
            reason = receiver.accept(token, body, {k.lower(): v for k, v in self.headers.items()})
            if reason is not None:
                receiver.refuse(reason)
            self._answer(200 if reason is None else 403 if reason != "unknown token" else 404)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # quiet: the kernel's stderr is the user's notebook
            pass

    return Handler
