"""Where the API key and the service's address come from, looked up again at each use until one is found.

Order, for the key and for the base URL alike:
1. the environment (`APIKLEY_API_KEY`, `APIKLEY_BASE_URL`), so `os.environ[...] = ...` in a cell takes effect on
   the next cell, with no restart;
2. a `.env` file: the nearest one from the notebook's folder up to the nearest project root (a folder holding
   `.git` or `pyproject.toml`), never above the user's home; outside home with no project root, only the
   notebook's own folder. Read with python-dotenv without `${...}` expansion; the file is never written. A `.env`
   further up that names APIKLEY_ variables is ignored, and the load line says so (`Credentials.ignored`);
3. a key entered in this process (`%imagen4 key`, a masked prompt): kept in memory only.

Trust: a key from one place is not sent to an address from a `.env` (while the key comes from the environment or
`%imagen4 key`) unless the user trusts that host once (`%imagen4 trust HOST`, or APIKLEY_TRUSTED_HOSTS): see
`untrusted_reason`. The default host needs no trust; loopback hosts do (on a shared machine anyone may listen
on one of its ports); the in-kernel simulator's address and key come from one place, so it needs none.

Nothing here prints, stores or logs the key; `Credentials` never shows it in its repr. `check_base_url` refuses
a base URL that would leak the key (credentials in it, plain http to a host that is not loopback, a bad port),
and `refuse_key_leak` any request whose URL or body would carry a known secret outside the Authorization header.
"""
from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import errors as E

ENV_KEY = "APIKLEY_API_KEY"
ENV_BASE_URL = "APIKLEY_BASE_URL"
ENV_WEBHOOK_KEY = "APIKLEY_WEBHOOK_KEY"
ENV_TRUSTED = "APIKLEY_TRUSTED_HOSTS"
DOTENV = ".env"
PROJECT_MARKERS = (".git", "pyproject.toml")
DEFAULT_BASE_URL = "https://api.apikley.ru"  # the service, when nothing names another
DEFAULT_HOST = "api.apikley.ru"
MIN_SECRET = 8  # shorter secrets cannot be told from ordinary text; they are not looked for in requests

_entered: dict[str, str] = {}  # "key" / "webhook" -> typed at %imagen4 key / webhook-key; memory only
_trusted: set[str] = set()  # hosts trusted with `%imagen4 trust` in this process
_secrets: set[str] = set()  # every key and webhook key seen in this process, looked for in outgoing requests
_lock = threading.Lock()


@dataclass(frozen=True)
class Credentials:
    """The key and base URL in force, and where each came from (`key_source` is '' when there is no key)."""

    key: str = field(repr=False, default="")
    key_source: str = ""
    base_url: str | None = None
    url_source: str = ""
    ignored: tuple[str, ...] = ()  # .env files above the project root (or home) that name APIKLEY_ variables

    @property
    def has_key(self) -> bool:
        return bool(self.key)

    def describe_key(self) -> str:
        """'key set (from APIKLEY_API_KEY)' or 'no key': never any part of the key."""
        return f"key set (from {self.key_source})" if self.key else "no key"


def enter_key(key: str, which: str = "key") -> None:
    """Keep a key typed by the user for this process (it is never written anywhere). `which`: "key" (the API
    key, `%imagen4 key`) or "webhook" (the webhook HMAC key, `%imagen4 webhook-key`)."""
    key = (key or "").strip()
    with _lock:
        if key:
            _entered[which] = key
        else:
            _entered.pop(which, None)
    remember_secret(key)


def forget_entered_key(which: str = "key") -> None:
    with _lock:
        _entered.pop(which, None)


# -- secrets never leave in a request (except the key, in its Authorization header) ---------------------------
def remember_secret(value: str | None) -> None:
    """Note a key of this process (API or webhook key) so that no request body, URL or prompt carries it."""
    value = (value or "").strip()
    if len(value) >= MIN_SECRET:
        with _lock:
            _secrets.add(value)


def holds_secret(text: str) -> bool:
    """True if `text` contains a key of this process (`remember_secret`; the keys of `resolve` are noted)."""
    with _lock:
        known = tuple(_secrets)
    return any(secret in text for secret in known)


def refuse_key_leak(url: str, params: Mapping[str, Any] | None = None, body: Any = None) -> None:
    """Before a request leaves: a ConfigurationError if its URL, query or JSON body carries a key of this process
    (the key goes only in the Authorization header). Called by the client for every API call."""
    import json

    parts = {"address": url, "query": json.dumps(params or {}, ensure_ascii=False, default=str),
             "body": json.dumps(body, ensure_ascii=False, default=str)}
    for where, text in parts.items():
        if holds_secret(text):
            raise E.ConfigurationError(f"Refused before sending: the request's {where} contains your API or "
                                       "webhook key, which only ever goes in the Authorization header. Remove it "
                                       "(check APIKLEY_BASE_URL and the prompt).", not_sent=True)


# -- where .env files are read --------------------------------------------------------------------------------
def dotenv_boundary(here: Path) -> Path:
    """The highest folder whose `.env` is read for `here`: the nearest project root (`.git` or `pyproject.toml`),
    else the user's home when `here` is inside it, else `here` itself."""
    try:
        home = Path.home().resolve()
    except (OSError, RuntimeError):
        home = None
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in PROJECT_MARKERS) or folder == home:
            return folder
    return here


def dotenv_search(start: str | os.PathLike | None) -> tuple[Path | None, tuple[Path, ...]]:
    """(the nearest `.env` from `start` up to its boundary or None, the `.env` files above the boundary)."""
    if start is None:
        return None, ()
    try:
        here = Path(start).resolve()
    except OSError:
        return None, ()
    top = dotenv_boundary(here)
    found: Path | None = None
    above: list[Path] = []
    inside = True
    for folder in (here, *here.parents):
        candidate = folder / DOTENV
        if candidate.is_file():
            if inside and found is None:
                found = candidate
            elif not inside:
                above.append(candidate)
        if folder == top:
            inside = False
    return found, tuple(above)


def find_dotenv(start: str | os.PathLike | None) -> Path | None:
    """The nearest `.env` from `start` (a folder) up to the nearest project root (never above home), or None."""
    return dotenv_search(start)[0]


def _dotenv_values(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    from dotenv import dotenv_values  # python-dotenv: imported only when a .env exists

    try:  # no ${...} expansion: a .env must not copy the key (or anything else) into the address
        return {k: v for k, v in dotenv_values(path, interpolate=False).items() if isinstance(v, str)}
    except (OSError, UnicodeDecodeError):
        return {}


def _names_ours(path: Path) -> bool:
    return any(name.startswith("APIKLEY_") for name in _dotenv_values(path))


def resolve(start: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Credentials:
    """The key and base URL in force now (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    dotenv_path, above = dotenv_search(start)
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
    remember_secret(key)
    return Credentials(key=key, key_source=key_source if key else "", base_url=url or None,
                       url_source=url_source if url else "",
                       ignored=tuple(str(p) for p in above if _names_ours(p)))


def webhook_key(start: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The webhook HMAC key in force: APIKLEY_WEBHOOK_KEY, a `.env` (as for the API key), or one typed at
    `%imagen4 webhook-key`; None when there is none. Kept in memory only."""
    env = os.environ if environ is None else environ
    key = (env.get(ENV_WEBHOOK_KEY) or "").strip() or (_dotenv_values(find_dotenv(start)).get(ENV_WEBHOOK_KEY)
                                                      or "").strip()
    if not key:
        with _lock:
            key = _entered.get("webhook", "")
    remember_secret(key)
    return key or None


# -- trust: a key from one place, an address from another ----------------------------------------------------
def trust_host(host: str) -> str:
    """Trust `host` (a name or `name:port`) with the key for this process (`%imagen4 trust HOST`)."""
    shown = _host_of(host)
    if not shown:
        raise E.ConfigurationError(f"{host!r} is not a host name; give one such as api.example.com.")
    with _lock:
        _trusted.add(shown)
    return shown


def forget_trusted_hosts() -> None:
    with _lock:
        _trusted.clear()


def _host_of(text: str) -> str:
    """A host or host:port as `is_trusted` compares it: lower case, no scheme or path, IPv6 without brackets."""
    text = (text or "").strip().lower()
    if "://" in text:
        text = urlsplit(text).netloc.rsplit("@", 1)[-1]
    text = text.strip("/")
    if text.startswith("["):  # [::1] or [::1]:8080
        inner, _, rest = text[1:].partition("]")
        text = inner + rest
    return text.rstrip(".")


def is_trusted(base_url: str, environ: Mapping[str, str] | None = None) -> bool:
    """True for the default host and a host (or host:port) trusted by `%imagen4 trust` or APIKLEY_TRUSTED_HOSTS."""
    env = os.environ if environ is None else environ
    parts = urlsplit(base_url)
    host = (parts.hostname or "").rstrip(".")
    if host == DEFAULT_HOST:
        return True
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        netloc = host
    with _lock:
        hosts = set(_trusted)
    hosts.update(_host_of(h) for h in (env.get(ENV_TRUSTED) or "").split(",") if h.strip())
    return host in hosts or netloc in hosts


def untrusted_reason(creds: Credentials, environ: Mapping[str, str] | None = None, *,
                     key_from_code: bool = False) -> str | None:
    """Why the key may not go to `creds.base_url` yet (one line), or None. Asked when the address comes from a
    `.env` and the key from elsewhere (the environment, `%imagen4 key`, code): a `.env` in a parent folder or a
    cloned project must not send the user's own key to its server without the user saying yes once."""
    if not creds.base_url or not creds.url_source.startswith(DOTENV):
        return None
    if not key_from_code and (not creds.key or creds.key_source == creds.url_source):
        return None
    if is_trusted(creds.base_url, environ):
        return None
    host = urlsplit(creds.base_url).hostname or creds.base_url
    source = "your code" if key_from_code else creds.key_source
    return (f"Not sending your key (from {source}) to {host}: that address comes from {creds.url_source}. If you "
            f"trust it, run %imagen4 trust {host} (this kernel) or add it to {ENV_TRUSTED}; else remove "
            f"{ENV_BASE_URL} from that file.")


def checked_target(creds: Credentials, options: Mapping[str, Any]) -> tuple[str, str | None]:
    """The (key, base URL) a session's client is built for: `options` (code) win over `creds`; a key and an
    address from different places need the host trusted (`untrusted_reason`), else a ConfigurationError."""
    key, url = options.get("api_key", creds.key), options.get("base_url", creds.base_url)
    if "base_url" not in options and key:
        reason = untrusted_reason(creds, key_from_code="api_key" in options)
        if reason:
            raise E.ConfigurationError(reason, not_sent=True)
    return key, url


def shown_url(url: str) -> str:
    """`url` for a line the user sees: a key of this process in it is replaced by `<key>`."""
    with _lock:
        known = tuple(_secrets)
    for secret in known:
        url = url.replace(secret, "<key>")
    return url


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
    try:
        parts.port  # noqa: B018 - urllib checks the range here (0-65535)
    except ValueError:
        port = parts.netloc.rsplit(":", 1)[-1][:12]
        raise E.ConfigurationError(f"The base URL's port {port!r} is not a port (0-65535); check "
                                   "APIKLEY_BASE_URL.") from None
    if holds_secret(url):
        raise E.ConfigurationError("The base URL contains your API key; remove it (the key goes only in the "
                                   "Authorization header, from APIKLEY_API_KEY).")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        raise E.ConfigurationError(
            f"Refusing to send the API key over plain http to {parts.hostname}. Use https, or pass "
            "allow_insecure_http=True (or set APIKLEY_ALLOW_INSECURE_HTTP=1) if you know the network is safe.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
