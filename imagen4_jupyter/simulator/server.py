"""HTTP layer of the simulator: routing, auth, rate limit, envelopes, faults.

Envelopes are spelled as the real service spells them: ``msg`` on
createTask, credit and gateway-level errors, ``message`` on recordInfo.
Auth failures answer HTTP 401 here; the real service may answer HTTP 200
with body code 401, so clients must always read the body ``code``.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .faults import CODE_MESSAGES, Fault

if TYPE_CHECKING:
    from .core import Simulator

JSON_TYPE = "application/json; charset=utf-8"
CREATE_PATH = "/api/v1/jobs/createTask"
RECORD_PATH = "/api/v1/jobs/recordInfo"
CREDIT_PATH = "/api/v1/chat/credit"
FILES_PREFIX = "/files/"

NGINX_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class Reply:
    """A response ready to be written."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Reply(status, body, JSON_TYPE, dict(headers or {}))


def envelope(code: int, text: str, data: Any = None, key: str = "msg") -> dict[str, Any]:
    return {"code": code, key: text, "data": data}


def html_reply(status: int, reason: str) -> Reply:
    page = NGINX_PAGE.format(status=status, reason=reason).encode()
    return Reply(status, page, "text/html")


def classify(method: str, path: str) -> str:
    """Endpoint label of a request (as recorded and as matched by faults)."""
    if path == CREATE_PATH and method == "POST":
        return "createTask"
    if path == RECORD_PATH and method in ("GET", "HEAD"):
        return "recordInfo"
    if path == CREDIT_PATH and method in ("GET", "HEAD"):
        return "credit"
    if path.startswith(FILES_PREFIX) and method in ("GET", "HEAD"):
        return "image"
    return "other"


class SimHTTPServer(ThreadingHTTPServer):
    """Threading server that tracks open connections so stop() can cut them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
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
                socket.create_connection(self.server_address[:2], timeout=0.2).close()
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
    def sim(self) -> Simulator:
        return self.server.sim

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
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
        self.sim._record(self.command, parts.path, query, dict(self.headers.items()), body, endpoint)
        fault = self.sim._faults.take(endpoint)
        if fault is not None and fault.delay:
            if self.sim._stopping.wait(fault.delay):
                return self._drop()
        if fault is not None:
            early = self._early_fault(fault, endpoint)
            if early is not None:
                return self._send(early) if isinstance(early, Reply) else self._drop()
        reply = self._process(endpoint, parts.path, query, body)
        if fault is None:
            return self._send(reply)
        if fault.kind == "drop_after":
            return self._drop()
        if fault.kind == "content_type":
            reply.content_type = fault.get("content_type")
        if fault.kind == "malformed" and reply.status == 200:
            # Only reached for images: right length header, corrupt bytes.
            reply.body = reply.body[: max(1, len(reply.body) // 2)]
        self._send(reply, truncate=fault.kind == "truncate")

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

    def _process(self, endpoint: str, path: str, query: dict[str, str], body: bytes | None) -> Reply:
        if endpoint == "other":
            return json_reply(envelope(404, "endpoint not found"), 404)
        if endpoint == "image":
            return self._image(path)
        key = self._api_key()
        if key is None:
            return self._unauthorized()
        retry = self.sim._rate_limiter.check(key)
        if retry is not None:
            return json_reply(envelope(429, "Rate limit exceeded"), 200, {"Retry-After": str(retry)})
        if endpoint == "createTask":
            return self._create(body, key)
        if endpoint == "recordInfo":
            return self._record_info(query)
        return json_reply(envelope(200, "success", self.sim._balance_number()))

    def _api_key(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, key = header.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        accepted = self.sim.api_keys
        if accepted is not None and key not in accepted:
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
        return json_reply(envelope(401, f"Unauthorized: {why}"), 401)

    def _create(self, body: bytes | None, key: str) -> Reply:
        try:
            decoded = json.loads((body or b"").decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return json_reply(envelope(422, f"request body is not valid JSON: {exc}"))
        code, text, data = self.sim._create_task(decoded, key)
        return json_reply(envelope(code, text, data))

    def _record_info(self, query: dict[str, str]) -> Reply:
        task_id = query.get("taskId", "").strip()
        if not task_id:
            return json_reply(envelope(422, "taskId is required", None, "message"))
        data = self.sim._record_data(task_id)
        if data is None:
            return json_reply(envelope(404, "task not found", None, "message"))
        return json_reply(envelope(200, "success", data, "message"))

    def _image(self, path: str) -> Reply:
        token, _, name = path[len(FILES_PREFIX) :].partition("/")
        data = self.sim._image_bytes(token, name)
        if data is None:
            return html_reply(404, "Not Found")
        return Reply(200, data, "image/png", {"Cache-Control": "public, max-age=86400"})
