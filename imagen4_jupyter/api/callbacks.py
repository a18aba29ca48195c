"""A small receiver for the service's callbacks (opt in, for hosts the service can reach).

Each request gets a `callBackUrl` of its own: `<public URL>/<one-time token>`. A POST to it is only ever a
*hint* to check that task at once with `recordInfo`; its body is never taken as the result, nor its figures
(`consumeCredits`, `remainedCredits`) as a measured cost or balance, signed or not: the signature covers only the
task id and the timestamp. A flood cannot spend the query budget: bodies over `max_body` bytes or nested deeper
than `MAX_DEPTH` are refused, unknown tokens are refused, and the consumer ignores task ids it does not follow and
coalesces repeats. With a webhook key (section 9 of the service's docs) unsigned, badly signed and replayed POSTs
are refused; signatures are compared in constant time.

Bounded whatever arrives: at most `workers` handler threads (a pool), `workers * QUEUED` connections waiting or
handled at once (more are closed at once), and each connection closed after `DEADLINE` seconds (one watchdog
thread), so idle or slow connections hold no thread for long. Refusals and handler failures are counted and
logged at debug level, never printed into the notebook.

The token also resolves "outcome unknown": if a createTask answer was lost but the task was created, its
callback names the task id, and the token says which request it belongs to.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

from .credentials import remember_secret

if TYPE_CHECKING:
    from .request import GenerationRequest

MAX_BODY = 64 * 1024
MAX_DEPTH = 32  # nesting of a callback body's JSON ([ and {); the service's are 3 deep
MAX_SKEW = 300.0  # seconds a signed timestamp may be off
SEEN = 4096  # signatures remembered against replays
WORKERS = 4  # handler threads at most, whatever the number of connections
QUEUED = 4  # connections per worker that may wait for one; more are closed at once
DEADLINE = 10.0  # seconds a connection may take from accept to answer (headers, body and all)
READ_TIMEOUT = 5.0  # seconds one read may wait

log = logging.getLogger("imagen4_jupyter.callbacks")


@dataclass(frozen=True)
class Hint:
    """A callback that passed the checks: check `task_id` now. `token` names the request it was sent for. Nothing
    else of the body is passed on: its figures are the sender's word, not a measurement."""

    task_id: str
    token: str
    signed: bool


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if the JSON text nests arrays/objects deeper than `limit` (checked before parsing: Python's parser
    recurses, and 60,000 `[` raise RecursionError)."""
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


class BoundedHTTPServer(HTTPServer):
    """An HTTPServer whose requests run on a fixed pool of `workers` threads: at most `workers * QUEUED`
    connections are held (the rest are closed at once), and one watchdog thread shuts each connection down
    `deadline` seconds after it was accepted."""

    request_queue_size = 128  # the listen backlog: connections past it are accepted and closed, not left waiting

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, workers: int = WORKERS,
                 deadline: float = DEADLINE):
        super().__init__(address, handler)
        self.workers = workers
        self.deadline = deadline
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imagen4-callback")
        self.slots = threading.BoundedSemaphore(workers * QUEUED)
        self.dropped = 0  # connections closed at once because every slot was taken
        self._open: dict[socket.socket, float] = {}  # connection -> when it must be closed
        self._open_lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="imagen4-callback-watchdog", daemon=True)
        self._watchdog.start()

    def process_request(self, request: socket.socket,  # type: ignore[override]  # TCP: the socket, never UDP's pair
                        client_address: tuple) -> None:
        if not self.slots.acquire(blocking=False):
            self.dropped += 1
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = time.monotonic() + self.deadline
        try:
            self.pool.submit(self._work, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._done(request)

    def _work(self, request: socket.socket, client_address: tuple) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: socket.socket) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        self.shutdown_request(request)
        self.slots.release()

    def _watch(self) -> None:
        while not self._stopping.wait(0.25):
            now = time.monotonic()
            with self._open_lock:
                late = [sock for sock, until in self._open.items() if until <= now]
            for sock in late:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # the handler's read ends; its worker moves on
                except OSError:
                    pass

    def handle_error(self, request: object, client_address: tuple) -> None:
        log.debug("callback handler failed for %s", client_address[0] if client_address else "?", exc_info=True)

    def server_close(self) -> None:
        self._stopping.set()
        super().server_close()
        with self._open_lock:
            held = list(self._open)
        for sock in held:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.pool.shutdown(wait=False, cancel_futures=True)


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
                 clock: Callable[[], float] = time.time, workers: int = WORKERS, deadline: float = DEADLINE):
        self.public_url = public_url.rstrip("/")
        self.on_hint = on_hint
        self.webhook_key = webhook_key or None
        remember_secret(self.webhook_key)  # no request body, URL or prompt of ours may carry it
        self.max_body = max_body
        self.clock = clock
        self.tokens: dict[str, str | None] = {}  # token -> the request's key (or None once it has a task)
        self.refused: dict[str, int] = {}  # reason -> count
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._server = BoundedHTTPServer((host, port), _handler(self), workers=workers, deadline=deadline)
        self._thread = threading.Thread(target=self._server.serve_forever, name="imagen4-callbacks", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return cast("tuple[str, int]", self._server.server_address[:2])  # an AF_INET(6) address: (host text, port)

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
    @property
    def workers(self) -> int:
        """The most handler threads this receiver runs at once."""
        return self._server.workers

    def refuse(self, reason: str) -> None:
        """Count a refused POST (and log it at debug level: never into the notebook)."""
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        log.debug("callback refused: %s", reason)

    def accept(self, token: str, body: bytes, headers: dict[str, str]) -> str | None:
        """None if accepted (and the hint passed on), else why it was refused."""
        with self._lock:
            known = token in self.tokens
        if not known:
            return "unknown token"
        if too_deep(body):
            return "nested too deep"
        try:
            doc = json.loads(body)
            data = doc.get("data") if isinstance(doc, dict) else None
            task_id = (data or {}).get("taskId") or (data or {}).get("task_id")
        except (ValueError, AttributeError, RecursionError):
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
        self.on_hint(Hint(task_id=task_id, token=token, signed=signed))
        return None


def _handler(receiver: CallbackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "imagen4-callbacks"
        timeout = READ_TIMEOUT  # each read; the server's watchdog bounds the whole connection

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
            try:
                reason = receiver.accept(token, body, {k.lower(): v for k, v in self.headers.items()})
            except Exception:  # a bug or an odd body: refused, logged, never raised into the notebook
                log.debug("callback check failed", exc_info=True)
                reason = "could not be checked"
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
