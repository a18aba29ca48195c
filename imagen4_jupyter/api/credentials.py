"""Where the API key and the service's address come from, looked up again at each use until one is found.

Order, for the key and for the base URL alike:
1. the environment (`APIKLEY_API_KEY`, `APIKLEY_BASE_URL`), so `os.environ[...] = ...` in a cell takes effect on
   the next cell, with no restart;
2. a `.env` file: the nearest one from the notebook's folder upward (read with python-dotenv; the file is
   never written);
3. a key entered in this process (`%imagen4 key`, a masked prompt): kept in memory only.

Nothing here prints, stores or logs the key; `Credentials` never shows it in its repr. `check_base_url` refuses
a base URL that would leak the key (credentials in it, plain http to a host that is not loopback).
"""
from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import errors as E

ENV_KEY = "APIKLEY_API_KEY"
ENV_BASE_URL = "APIKLEY_BASE_URL"
DOTENV = ".env"
DEFAULT_BASE_URL = "https://api.apikley.ru"  # the service, when nothing names another

_entered: dict[str, str] = {}  # "key" -> the key typed at %imagen4 key; memory only
_lock = threading.Lock()


@dataclass(frozen=True)
class Credentials:
    """The key and base URL in force, and where each came from (`key_source` is '' when there is no key)."""

    key: str = field(repr=False, default="")
    key_source: str = ""
    base_url: str | None = None
    url_source: str = ""

    @property
    def has_key(self) -> bool:
        return bool(self.key)

    def describe_key(self) -> str:
        """'key set (from APIKLEY_API_KEY)' or 'no key': never any part of the key."""
        return f"key set (from {self.key_source})" if self.key else "no key"


def enter_key(key: str) -> None:
    """Keep a key typed by the user for this process (it is never written anywhere)."""
    key = (key or "").strip()
    with _lock:
        if key:
            _entered["key"] = key
        else:
            _entered.pop("key", None)


def forget_entered_key() -> None:
    with _lock:
        _entered.pop("key", None)


def find_dotenv(start: str | os.PathLike | None) -> Path | None:
    """The nearest `.env` from `start` (a folder) upward, or None."""
    if start is None:
        return None
    try:
        here = Path(start).resolve()
    except OSError:
        return None
    for folder in (here, *here.parents):
        candidate = folder / DOTENV
        if candidate.is_file():
            return candidate
    return None


def _dotenv_values(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    from dotenv import dotenv_values  # python-dotenv: imported only when a .env exists

    try:
        return {k: v for k, v in dotenv_values(path).items() if isinstance(v, str)}
    except (OSError, UnicodeDecodeError):
        return {}


def resolve(start: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Credentials:
    """The key and base URL in force now (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    dotenv_path = find_dotenv(start)
    dotenv = _dotenv_values(dotenv_path)
    where = f".env at {dotenv_path}" if dotenv_path else ".env"
    key, key_source = (env.get(ENV_KEY) or "").strip(), ENV_KEY
    if not key:
        key, key_source = (dotenv.get(ENV_KEY) or "").strip(), where
    if not key:
        with _lock:
            key, key_source = _entered.get("key", ""), "%imagen4 key"
    url, url_source = (env.get(ENV_BASE_URL) or "").strip(), ENV_BASE_URL
    if not url:
        url, url_source = (dotenv.get(ENV_BASE_URL) or "").strip(), where
    return Credentials(key=key, key_source=key_source if key else "", base_url=url or None,
                       url_source=url_source if url else "")


NO_KEY_HELP = (f"No API key. Set {ENV_KEY} (os.environ[{ENV_KEY!r}] = ... in a cell works, no restart), put "
               f"{ENV_KEY}=... in a .env file beside the notebook, or run %imagen4 key to type it (kept in memory "
               "only). To try everything without an account: %imagen4 simulator.")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """Normalise the base URL; refuse credentials in it and plain http to a non-loopback host."""
    parts = urlsplit(url.strip())
    if parts.username or parts.password:  # checked first: no message below may repeat a password
        raise E.ConfigurationError("The base URL contains a user name or password; remove it "
                                   "(the key goes in APIKLEY_API_KEY).")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = parts.scheme or url.strip().rsplit("@", 1)[-1][:80]
        raise E.ConfigurationError(f"The base URL must look like https://api.apikley.ru, not {shown!r}.")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        raise E.ConfigurationError(
            f"Refusing to send the API key over plain http to {parts.hostname}. Use https, or pass "
            "allow_insecure_http=True (or set APIKLEY_ALLOW_INSECURE_HTTP=1) if you know the network is safe.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
