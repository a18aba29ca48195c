"""HTTP layer of the simulator: routing, auth, envelopes, transport-level faults.

Envelopes are spelled as the real service spells them: ``msg`` on createTask, credit, download-url and
gateway-level errors, ``message`` on recordInfo. A missing or wrong key answers body code 401 with HTTP
200 by default, as the live service does (``auth_http_status=401`` for a plain HTTP 401). Everything
the handler needs from the simulator goes through :class:`~.backend.Backend`; this module never
imports :mod:`.core`.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from .backend import (
    JSON_TYPE,
    SIMULATOR_HEADER,
    SIMULATOR_NAME,
    Backend,
    Reply,
    classify,
    envelope,
    html_reply,
    json_reply,
)
from .faults import CODE_MESSAGES, Fault
from .images import HUGE, as_jpeg, huge_png, pad_png

#: What Spring-style gateways answer when a required query parameter is missing (the live quirk).
MISSING_TASK_ID = "Required request parameter 'taskId' for method parameter type String is not present"


class SimHTTPServer(ThreadingHTTPServer):
    """Threading server that tracks open connections so stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients hanging up mid-answer is routine here."""

    def stop_serving(self) -> None:
        """Stop ``serve_forever`` promptly (poking the socket to wake it), then close."""
        stopper = threading.Thread(target=self.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():
            try:
                address = cast("tuple[str, int]", self.server_address[:2])  # AF_INET(6): (host text, port)
                socket.create_connection(address, timeout=0.2).close()
            except OSError:
                pass
            stopper.join(0.01)
        self.server_close()
        self.close_connections()

    def close_connections(self) -> None:
        """Shut down every open client connection."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    """Serves the Apikley API for the owning :class:`Simulator`."""

    server: SimHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 120
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """No per-request logging."""

    def version_string(self) -> str:
        return self.server_version

    def end_headers(self) -> None:
        """Every answer says it comes from a simulator (errors, 429s, images and the stdlib's own errors too)."""
        if self.server.backend.announce:
            self.send_header(SIMULATOR_HEADER, SIMULATOR_NAME)
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle()

    # -- plumbing ---------------------------------------------------------
    @property
    def backend(self) -> Backend:
        return self.server.backend

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length))

    def _send(self, reply: Reply, *, truncate: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body[: len(reply.body) // 2] if truncate else reply.body)
        self.wfile.flush()
        if truncate:
            self.close_connection = True

    def _drop(self) -> None:
        """Close the connection without writing anything."""
        self.close_connection = True

    # -- request flow -----------------------------------------------------
    def _handle(self) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        endpoint = classify(self.command, parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        backend = self.backend
        backend.record_request(self.command, parts.path, query, dict(self.headers.items()), body, endpoint)
        fault = backend.take_fault(endpoint)
        limited: int | None | bool = False  # False: the limits are checked when the request is processed
        if fault is not None and fault.delay:
            key = self._api_key() if endpoint not in ("image", "other") else None
            if key is not None:  # counted when it arrives, as the service counts it; only its answer is late
                limited = backend.check_limits(endpoint, key)
            if backend.wait_stopping(fault.delay):
                return self._drop()
        if fault is not None:
            early = self._early_fault(fault, endpoint)
            if early is not None:
                return self._send(early) if isinstance(early, Reply) else self._drop()
        reply = self._process(endpoint, parts.path, query, body, limited)
        if fault is None:
            return self._send(reply)
        if fault.kind == "drop_after":
            return self._drop()
        if fault.kind == "trickle":
            return self._trickle(reply, fault)
        if fault.kind == "content_type":
            reply.content_type = fault.get("content_type")
        if reply.status == 200 and endpoint == "image":
            self._spoil_image(reply, fault)
        self._send(reply, truncate=fault.kind == "truncate")

    @staticmethod
    def _spoil_image(reply: Reply, fault: Fault) -> None:
        """The faults that replace a good image's bytes (the answer stays HTTP 200 image/png)."""
        if fault.kind == "malformed":  # right length header, corrupt bytes
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        elif fault.kind == "huge_png":
            size = HUGE if fault.get("huge_png") is True else tuple(fault.get("huge_png"))
            reply.body = huge_png(*size)
        elif fault.kind == "oversize":
            reply.body = pad_png(reply.body, int(fault.get("oversize")))
        elif fault.kind == "mislabeled":
            reply.body = as_jpeg(reply.body)

    def _trickle(self, reply: Reply, fault: Fault) -> None:
        """Headers at once (with the full Content-Length), then the body one byte per interval."""
        option = fault.get("trickle")
        interval = 1.0 if option is True else float(option)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.close_connection = True
        try:
            for i in range(len(reply.body)):
                self.wfile.write(reply.body[i : i + 1])
                self.wfile.flush()
                if self.backend.wait_stopping(interval):
                    return
        except OSError:
            return

    def _early_fault(self, fault: Fault, endpoint: str) -> Reply | bool | None:
        """Answer a fault that replaces processing; True = drop, None = process."""
        kind = fault.kind
        if kind == "drop":
            return True
        if kind == "code":
            code = int(fault.get("code"))
            text = fault.get("msg") or CODE_MESSAGES[code]
            key = "message" if endpoint == "recordInfo" else "msg"
            headers = {}
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault.get("retry_after"))
            return json_reply(envelope(code, text, None, key), fault.get("http_status") or 200, headers)
        if kind == "html":
            status = int(fault.get("http_status"))
            return html_reply(status, self.responses.get(status, ("Error",))[0])
        if kind == "malformed" and endpoint != "image":
            return Reply(200, b'{"code": 200, "msg": "success", "data": {"taskId": "task_goo', JSON_TYPE)
        if kind == "redirect":
            target = fault.get("redirect")
            page = f'<html><body>Moved: <a href="{target}">{target}</a></body></html>'.encode()
            return Reply(302, page, "text/html", {"Location": target})
        if kind == "expired":
            return html_reply(404, "Not Found")
        return None

    def _process(self, endpoint: str, path: str, query: dict[str, str], body: bytes | None,
                 limited: int | None | bool = False) -> Reply:
        backend = self.backend
        if endpoint == "other" or (endpoint == "downloadUrl" and not backend.download_url_enabled):
            return json_reply(envelope(404, "endpoint not found"), 404)
        if endpoint == "image":
            return backend.image(path)
        key = self._api_key()
        if key is None:
            return self._unauthorized()
        retry = backend.check_limits(endpoint, key) if limited is False else limited
        if retry is not None:
            return json_reply(envelope(429, "Rate limit exceeded"), 200, {"Retry-After": str(retry)})
        if endpoint in ("createTask", "downloadUrl"):
            decoded, error = self._json_body(body)
            if error:
                return json_reply(envelope(422, error))
            if endpoint == "createTask":
                return json_reply(envelope(*backend.create_task(decoded, key)))
            url = decoded.get("url") if isinstance(decoded, dict) else None
            return json_reply(envelope(*backend.download_url(url)))
        if endpoint == "recordInfo":
            task_id = query.get("taskId", "").strip()
            if not task_id:
                return json_reply(envelope(400, MISSING_TASK_ID), 400)
            return backend.record_info(task_id)
        return json_reply(envelope(200, "success", backend.balance()))

    @staticmethod
    def _json_body(body: bytes | None) -> tuple[Any, str]:
        """``(decoded JSON body, "")``, or ``(None, why it is not JSON)``."""
        try:
            return json.loads((body or b"").decode("utf-8")), ""
        except (UnicodeDecodeError, ValueError) as exc:
            return None, f"request body is not valid JSON: {exc}"

    def _api_key(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, key = header.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or not self.backend.accepts_key(key):
            return None
        return key

    def _unauthorized(self) -> Reply:
        header = self.headers.get("Authorization")
        if not header:
            why = "missing Authorization header (expected 'Authorization: Bearer <API key>')"
        elif not header.strip().lower().startswith("bearer ") or not header.strip()[7:].strip():
            why = "malformed Authorization header (expected 'Bearer <API key>')"
        else:
            why = "invalid API key"
        return json_reply(envelope(401, f"Unauthorized: {why}"), self.backend.auth_http_status)
