"""Reading answers with a wall-clock deadline and a size cap, and downloading result images.

`requests`' timeout bounds each socket read, not a whole answer: a server that sends one byte a second never
trips it. `read_body` reads what has arrived (`read1`) and stops at a deadline for the whole answer, and at a
byte cap, so a slow or endless answer costs bounded time and memory. An image URL that answered 403/404/410 has
expired: the client then asks `download-url` for a fresh link (apikley.md section 8); the messages for when the
service no longer serves the images are here.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import errors as E
from .schedules import parse_retry_after

if TYPE_CHECKING:
    import requests

EXPIRED_STATUSES = (403, 404, 410)  # what an expired result URL answers (signed CDN URLs answer 403)
CHUNK = 64 * 1024


class TooSlow(Exception):
    """The answer did not arrive in full before its deadline."""


class TooLarge(Exception):
    """The answer is larger than its cap."""


def read_body(resp: requests.Response, *, deadline: float, limit: int) -> bytes:
    """The whole body of a streamed response, read as it arrives; raises `TooSlow` once `time.monotonic()`
    passes `deadline` (a stalled read still ends at the read timeout) and `TooLarge` past `limit` bytes."""
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise TooLarge()
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise TooSlow()
        chunk = read_some(resp)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise TooLarge()
        chunks.append(chunk)


def read_some(resp: requests.Response) -> bytes:
    """What has arrived of the body (at most CHUNK bytes, one socket read), with urllib3's errors turned into
    the `requests` exceptions `iter_content` would raise."""
    import requests
    import urllib3.exceptions as U

    try:
        return resp.raw.read1(CHUNK, decode_content=True)
    except U.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from None
    except U.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    except U.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except (U.ProtocolError, U.HTTPError, OSError) as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None


def size_text(cap: int) -> str:
    return f"{cap / (1024 * 1024):g} MB" if cap >= 1024 * 1024 else f"{cap} bytes"


def too_big(cap: int, task_id: str | None) -> E.DownloadError:
    return E.DownloadError(f"The image is larger than the {size_text(cap)} cap (max_download_bytes).",
                           task_id=task_id, retryable=False)


def check_image_url(url: str, task_id: str | None) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # the same URL will be refused again: fail now, not at the overall limit
        raise E.DownloadError(f"Refusing to download from a non-http(s) URL {url[:60]!r}.", task_id=task_id,
                              retryable=False)


def fetch_image(http: requests.Session, url: str, *, timeout: float | tuple[float, float], deadline: float,
                max_bytes: int, task_id: str | None) -> bytes:
    """GET an image URL (no credentials sent); checks status, type, size cap, completeness and the deadline
    (seconds for the whole download). An expired URL raises a DownloadError whose `code` is its HTTP status,
    one of EXPIRED_STATUSES."""
    import requests

    check_image_url(url, task_id)
    started = time.monotonic()
    try:
        with http.get(url, timeout=timeout, stream=True) as resp:
            status = resp.status_code
            if status in EXPIRED_STATUSES:
                raise E.DownloadError(f"The image URL answered {status}: it has expired or never existed (result "
                                      "URLs last about 24 h).", task_id=task_id, retryable=False, code=status)
            if 400 <= status < 500 and status not in (408, 425, 429):  # asking again will not change the answer
                raise E.DownloadError(f"The image URL answered HTTP {status}.", task_id=task_id, retryable=False,
                                      code=status)
            if status != 200:
                raise E.DownloadError(f"The image URL answered HTTP {status}.", task_id=task_id, code=status,
                                      retry_after=parse_retry_after(resp.headers.get("Retry-After")))
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and not (ctype.startswith("image/") or ctype in ("application/octet-stream",
                                                                       "binary/octet-stream")):
                raise E.DownloadError(f"The image URL served {ctype!r}, not an image.", task_id=task_id,
                                      retryable=False)
            announced = resp.headers.get("Content-Length") or ""
            length = int(announced) if announced.isdigit() else 0
            try:
                data = read_body(resp, deadline=started + deadline, limit=max_bytes)
            except TooLarge:
                raise too_big(max_bytes, task_id) from None
            except TooSlow:
                raise E.DownloadError(f"The image download took longer than {deadline:g} s (download_deadline) "
                                      "and was abandoned; it will be retried.", task_id=task_id) from None
    except requests.RequestException as exc:
        # a redirect to a file:/ftp: URL, a redirect loop, a malformed URL: asking again changes nothing
        final = isinstance(exc, (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL,
                                 requests.exceptions.MissingSchema, requests.TooManyRedirects))
        raise E.DownloadError(f"Downloading an image failed ({type(exc).__name__}).", task_id=task_id,
                              retryable=not final) from None
    if length and len(data) != length:
        raise E.DownloadError(f"The image download is truncated ({len(data)} of {length} bytes).",
                              task_id=task_id)
    return data


def no_fresh_link(expired: E.DownloadError, refusal: E.Imagen4Error, task_id: str | None) -> E.DownloadError:
    """The final error when the result URL expired and download-url gave no fresh link."""
    said = (refusal.service_message or "").strip()
    if "retain" in said.lower() or "kept" in said.lower():
        why = "the media is no longer retained (the service keeps it about 14 days)"
    elif isinstance(refusal, E.NotFoundError):
        why = "this service offers no fresh links: download-url answered 404"
    else:
        why = f"download-url refused a fresh link ({refusal.code}{': ' + said[:120] if said else ''})"
    return E.DownloadError(f"The image URL answered {expired.code} (expired) and {why}, so the service no longer "
                           "serves these images. Run the request again for new ones.", task_id=task_id,
                           retryable=False, code=expired.code)


def fresh_link_expired(expired: E.DownloadError, again: E.DownloadError, task_id: str | None) -> E.DownloadError:
    """The final error when the fresh link answered expired too."""
    return E.DownloadError(f"The image URL answered {expired.code} (expired) and a fresh link from download-url "
                           f"answered {again.code} too, so the service no longer serves these images. Run the "
                           "request again for new ones.", task_id=task_id, retryable=False, code=again.code)


def with_fresh_link(url: str, fetch: Callable[[str], bytes], fresh_link: Callable[[], str],
                    task_id: str | None) -> bytes:
    """`fetch(url)`; if the URL has expired, `fetch(fresh_link())` instead. A refused fresh link, or one that
    has expired too, ends in a final DownloadError saying the service no longer serves the images."""
    check_image_url(url, task_id)
    try:
        return fetch(url)
    except E.DownloadError as err:
        if err.code not in EXPIRED_STATUSES:
            raise
        expired = err
    try:
        fresh = fresh_link()
    except (E.NotFoundError, E.ServiceValidationError, E.FeatureDisabledError) as refusal:
        raise no_fresh_link(expired, refusal, task_id) from None
    try:
        return fetch(fresh)
    except E.DownloadError as again:
        if again.code in EXPIRED_STATUSES:
            raise fresh_link_expired(expired, again, task_id) from None
        raise


def slow_answer(where: str, deadline: float, idempotent: bool, task_id: str | None) -> E.Imagen4Error:
    """The error for an API answer still arriving at its deadline (a createTask's outcome is then unknown)."""
    late = f"The {where} answer was still arriving after {deadline:g} s (request_deadline) and was abandoned"
    if not idempotent:
        return E.OutcomeUnknownError(f"{late}. " + E.OutcomeUnknownError.hint, task_id=task_id)
    return E.TransportError(f"{late}; it will be retried.", task_id=task_id)
