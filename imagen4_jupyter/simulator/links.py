"""Result URLs, their expiry and the fresh links of ``POST /api/v1/common/download-url`` (apikley.md 8).

Three clocks, all counted from a task's completion and all plain seconds (so tests shrink them):

* ``url_ttl`` (default 24 h): the result URLs in ``resultJson`` answer ``expired_status`` (404, or 403 /
  410 by option) after it;
* ``retention`` (default 14 days): the media itself is kept that long, so a fresh link still works
  after the result URL expired; after it, download-url answers body code 404 ("no longer retained")
  and every link to the media answers ``expired_status``;
* ``link_ttl`` (default 20 min): how long one fresh link stays valid from the moment it was issued.

Result URLs look like ``/files/<task token>/<i>.png``, fresh links like ``/dl/<link token>.png``.
"""

from __future__ import annotations

import re
import secrets
import threading
from typing import NamedTuple

FILES_PREFIX = "/files/"
LINKS_PREFIX = "/dl/"
DEFAULT_LINK_TTL = 20 * 60.0
DEFAULT_RETENTION = 14 * 86400.0
EXPIRED_STATUSES = (403, 404, 410)

_RESULT = re.compile(r"/files/([A-Za-z0-9_-]+)/([1-9][0-9]*)\.png")
_LINK = re.compile(r"/dl/([A-Za-z0-9_-]+)\.png")


class Target(NamedTuple):
    """One image a URL points at: the task's token and the image's 1-based index."""

    token: str
    index: int  # type: ignore[assignment]  # shadows tuple.index (a method), which nothing here calls


class Link(NamedTuple):
    """An issued fresh link."""

    target: Target
    expires_mono: float


def parse_result_path(path: str) -> Target | None:
    """The image a ``/files/<token>/<i>.png`` path names (None if it is not one)."""
    match = _RESULT.fullmatch(path)
    return None if match is None else Target(match.group(1), int(match.group(2)))


def link_token(path: str) -> str | None:
    """The token of a ``/dl/<token>.png`` path (None if it is not one)."""
    match = _LINK.fullmatch(path)
    return None if match is None else match.group(1)


class Links:
    """Thread-safe registry of fresh links."""

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}
        self._lock = threading.Lock()

    def issue(self, target: Target, ttl: float, now_mono: float) -> str:
        """A new link token for ``target``, valid ``ttl`` seconds from ``now_mono``."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._links[token] = Link(target, now_mono + ttl)
        return token

    def get(self, token: str) -> Link | None:
        with self._lock:
            return self._links.get(token)

    def __len__(self) -> int:
        with self._lock:
            return len(self._links)
