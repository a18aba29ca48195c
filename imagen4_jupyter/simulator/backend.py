"""What the HTTP layer needs from the simulator: the :class:`Backend` protocol, and the reply shapes.

:mod:`.server` depends on this module only (never on :mod:`.core`); :class:`~.core.Simulator`
implements :class:`Backend`. The dependency runs one way: core -> server -> backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from .faults import Fault
from .links import FILES_PREFIX, LINKS_PREFIX

JSON_TYPE = "application/json; charset=utf-8"
CREATE_PATH = "/api/v1/jobs/createTask"
RECORD_PATH = "/api/v1/jobs/recordInfo"
CREDIT_PATH = "/api/v1/chat/credit"
DOWNLOAD_URL_PATH = "/api/v1/common/download-url"
#: Every answer of the simulator carries this header (the client spells it the same, in ``api/client.py``), so a
#: client knows it talks to a simulator, however it was reached (``APIKLEY_BASE_URL``, the demo, the kernel's own).
SIMULATOR_HEADER = "X-Apikley-Simulator"
SIMULATOR_NAME = "imagen4-jupyter"

NGINX_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 410: "Gone"}


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


def html_reply(status: int, reason: str | None = None) -> Reply:
    page = NGINX_PAGE.format(status=status, reason=reason or REASONS.get(status, "Error")).encode()
    return Reply(status, page, "text/html")


def classify(method: str, path: str) -> str:
    """Endpoint label of a request (as recorded and as matched by faults)."""
    if path == CREATE_PATH and method == "POST":
        return "createTask"
    if path == RECORD_PATH and method in ("GET", "HEAD"):
        return "recordInfo"
    if path == CREDIT_PATH and method in ("GET", "HEAD"):
        return "credit"
    if path == DOWNLOAD_URL_PATH and method == "POST":
        return "downloadUrl"
    if path.startswith((FILES_PREFIX, LINKS_PREFIX)) and method in ("GET", "HEAD"):
        return "image"
    return "other"


class Backend(Protocol):
    """The simulator as the HTTP handler sees it. Answers are ``(body code, msg, data)`` or replies."""

    #: HTTP status of a body-code-401 answer (200 as on the live service, or 401).
    auth_http_status: int
    #: Whether ``POST /api/v1/common/download-url`` exists (False: it answers 404 like any unknown path).
    download_url_enabled: bool
    #: Whether every answer carries ``SIMULATOR_HEADER`` (False: it poses as the real service, for tests of that path).
    announce: bool

    def record_request(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes | None, endpoint: str
    ) -> None: ...

    def take_fault(self, endpoint: str) -> Fault | None: ...

    def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as the simulator is stopping."""
        ...

    def accepts_key(self, key: str) -> bool: ...

    def check_limits(self, endpoint: str, key: str) -> int | None:
        """None if the request may go on, else the Retry-After seconds of a 429 answer."""
        ...

    def create_task(self, body: Any, api_key: str) -> tuple[int, str, Any]: ...

    def record_info(self, task_id: str) -> Reply: ...

    def balance(self) -> float | int: ...

    def download_url(self, url: Any) -> tuple[int, str, Any]: ...

    def image(self, path: str) -> Reply: ...
