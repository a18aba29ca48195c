"""The service a notebook talks to: the one line `%load_ext` and `%imagen4 info` print (which service, whether a
key is set and from where, the history file), the key typed at `%imagen4 key` (a masked prompt through the
kernel's stdin), and `%imagen4 simulator` (a simulator started inside the kernel, on loopback).

How the service reaches the kernel: `%config Imagen4Magics.callback_listen / callback_url` start, restart or stop
the session's callback receiver, with one line about it (records/callback_hub.py does the work). The webhook key
is not a trait one sets: it comes from APIKLEY_WEBHOOK_KEY, a .env, or `%imagen4 webhook-key` (a masked prompt),
so it never sits in a line IPython saves.

The key is never shown: lines name where it came from (`Credentials.describe_key()`), never any part of it.
"""
from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from IPython.core.error import StdinNotImplementedError

from ..api import errors as E
from ..api.credentials import (
    NO_KEY_HELP,
    Credentials,
    enter_key,
    resolve,
    shown_url,
    trust_host,
    untrusted_reason,
)
from ..api.credentials import webhook_key as resolve_webhook_key
from ..records.location import credentials_start, find_notebook, history_path, where_line
from .options import CellError

if TYPE_CHECKING:
    from ..records.session import Session

SIMULATOR = "%imagen4 simulator"  # where the simulator's key and address come from, in messages
# realistic but quick: the real durations at a quarter of the time (a standard task takes 1.75-4 s, fast ones less,
# ultra ones more), images are a quarter of the real size, the documented limits are on
SIMULATOR_OPTIONS: dict[str, Any] = {"time_scale": 0.25, "image_scale": 0.25}
KEY_PROMPT = "Apikley API key (hidden; kept in this kernel's memory only, never written): "

Say = Callable[..., None]  # LiveViews.say(text, kind)
_simulator: Any = None  # the kernel's simulator (module-level: it outlives a reload of the extension)


def describe(session: Session, *, ask: bool = False) -> str:
    """One line: the service (the real one and its base URL, or a simulator and its address), whether a key is
    set and from where, and the history file. `ask`: find out whether the service is a simulator (`is_simulator`)."""
    simulated = is_simulator(session) if ask else session.simulated
    return describe_line(session.credentials(), simulated, session.where())


def in_kernel(session: Session) -> bool:
    """True while the session uses the simulator `%imagen4 simulator` started in this kernel."""
    return session.credentials().url_source == SIMULATOR


def is_simulator(session: Session) -> bool:
    """Whether the service in force answers as a simulator: known from an earlier answer, else asked once (a
    credits call). Without a key, or when the call fails, it is not known: False."""
    try:
        client = session.client
    except E.Imagen4Error:  # no client can be made (an address not trusted yet, say): not known
        return session.simulated
    if not session.simulated and client.has_key and client.simulated is None:
        try:
            client.credits()
        except E.Imagen4Error:
            pass
    return session.simulated


LINE_WIDTH = 100  # a message's line in a notebook: longer ones break at word boundaries


def fit_lines(parts: list[str], width: int = LINE_WIDTH, sep: str = " · ") -> str:
    """`parts` on one line joined by `sep` when that fits `width` characters; else one part a line (the ones
    after the first indented by two spaces), each broken at word boundaries, never mid-word."""
    parts = [p for p in parts if p]
    line = sep.join(parts)
    if len(line) <= width:
        return line
    out = []
    for i, part in enumerate(parts):
        indent = "" if i == 0 else "  "
        out.append(textwrap.fill(part, width, initial_indent=indent, subsequent_indent="    ",
                                 break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def describe_line(creds: Credentials, simulated: bool | None, where: str) -> str:
    """The line of `describe`, from its parts (so `%load_ext` can say it before any session exists). `simulated`
    None: not known yet (`%load_ext` asks nothing), said so for a base URL other than the real service's."""
    if simulated and creds.url_source == SIMULATOR:
        service = (f"the simulator at {shown_url(creds.base_url or '')} (simulated, nothing is billed; "
                   f"{SIMULATOR} --stop ends it)")
    elif simulated:
        source = f"from {creds.url_source}; " if creds.url_source else ""
        service = (f"a simulator at {shown_url(creds.base_url or '')} ({source}it answers as one: simulated, "
                   "nothing is billed)")
    else:
        from ..api.credentials import DEFAULT_BASE_URL  # not the client: %load_ext loads no requests

        unknown = simulated is None and (creds.base_url or DEFAULT_BASE_URL) != DEFAULT_BASE_URL
        notes = [f"from {creds.url_source}"] * bool(creds.url_source) + ["a simulator or not: not asked yet"] * unknown
        service = f"Apikley at {shown_url(creds.base_url or DEFAULT_BASE_URL)}" + (
            f" ({'; '.join(notes)})" if notes else "")
        if (reason := untrusted_reason(creds)) is not None:
            host = urlsplit(creds.base_url or "").hostname or ""
            service += f" [not trusted yet: %imagen4 trust {host}]" if host else f" [{reason}]"
    key = creds.describe_key() if creds.has_key else (
        "no key (set APIKLEY_API_KEY, put it in a .env beside the notebook, or run %imagen4 key)")
    ignored = [f"ignored {path}: above the project root" for path in creds.ignored]
    return fit_lines([f"imagen4: {service}", key, f"history: {where.removeprefix('imagen4 history: ')}", *ignored])


def load_line(user_ns: dict | None, notebook: str | None, history_folder: str | None) -> tuple[str, Path]:
    """`%load_ext`'s line and the history file, without making the session (it loads with the first cell):
    the current session's line if one exists (a reloaded extension, a panel opened first)."""
    current = sys.modules.get("imagen4_jupyter.records.session")
    session = current.current_session() if current is not None else None
    if session is not None:
        return describe(session), session.history.path
    nb, found_by = find_notebook(user_ns, notebook)
    path = history_path(nb, history_folder)
    return describe_line(resolve(start=credentials_start(nb)), None, where_line(path, found_by)), path


def raise_no_key() -> NoReturn:
    """The one-line error of a cell that needs a key and has none: every way to give one."""
    err = E.ConfigurationError(NO_KEY_HELP)
    raise CellError(err) from err


def ask_key() -> bool:
    """Ask for the key with a masked prompt (the kernel's stdin: an interactive front-end); keep it in memory.
    True if something was typed. A front-end that cannot answer (a headless run) gets the no-key error."""
    import getpass  # looked up at call time: ipykernel replaces getpass.getpass while a cell runs

    try:
        typed = getpass.getpass(KEY_PROMPT)
    except (StdinNotImplementedError, EOFError, OSError) as exc:
        err = E.ConfigurationError("This front-end cannot ask for the key (it sends no input, as headless runs "
                                   f"do). {NO_KEY_HELP}")
        raise CellError(err) from exc
    typed = (typed or "").strip()
    if typed:
        enter_key(typed)
    return bool(typed)


def key_command(session: Session, say: Say) -> None:
    """`%imagen4 key`: ask, keep the key in memory, and say which key is now in force (never the key)."""
    if not ask_key():
        say("Nothing typed; no key kept.", "error")
        return
    session.begin()  # the typed key is in force from now on
    creds = session.credentials()
    text = "Key kept in memory for this kernel only (never written to the notebook or the history)."
    if in_kernel(session):
        text += f" The simulator is in use until {SIMULATOR} --stop."
    elif creds.key_source != "%imagen4 key":
        text += f" Note: {creds.describe_key()}, which comes first; remove it to use the typed key."
    say(text, "ok")


WEBHOOK_PROMPT = "Apikley webhook HMAC key (hidden; kept in this kernel's memory only, never written): "


def webhook_key_command(say: Say) -> bool:
    """`%imagen4 webhook-key`: ask at a masked prompt, keep the key in memory; True if one was typed."""
    import getpass

    try:
        typed = (getpass.getpass(WEBHOOK_PROMPT) or "").strip()
    except (StdinNotImplementedError, EOFError, OSError) as exc:
        err = E.ConfigurationError("This front-end cannot ask for the webhook key (it sends no input, as headless "
                                   "runs do); set APIKLEY_WEBHOOK_KEY or put it in a .env beside the notebook.")
        raise CellError(err) from exc
    if not typed:
        say("Nothing typed; no webhook key kept.", "error")
        return False
    enter_key(typed, "webhook")
    say("Webhook key kept in memory for this kernel only (never written); callbacks must now be signed with it. "
        "APIKLEY_WEBHOOK_KEY or a .env, if set, come first.", "ok")
    return True


WEBHOOK_KEY_WAYS = ("set APIKLEY_WEBHOOK_KEY, put APIKLEY_WEBHOOK_KEY=... in a .env beside the notebook, or run "
                    "%imagen4 webhook-key (a masked prompt; kept in memory only)")
WEBHOOK_KEY_REFUSED = ("webhook_key is not set with %config: IPython saves that line in its history database. "
                       f"Instead {WEBHOOK_KEY_WAYS}.")


def refuse_webhook_key(value: object, *, building: bool) -> str:
    """The webhook_key trait's validation: always '' (the value is not kept, not even in the message). Set in a
    cell it is a TraitError (one line from %config); from a config file, while the magics are built, one line is
    printed and loading goes on."""
    from traitlets import TraitError

    if str(value or "").strip():
        if building:
            print(f"imagen4: ignored: {WEBHOOK_KEY_REFUSED}")
        else:
            raise TraitError(WEBHOOK_KEY_REFUSED)
    return ""


def apply_callbacks(session: Session, listen: str, public_url: str) -> list[str]:
    """Make the session's callbacks match the traits and the webhook key in force; the lines to print (the URL,
    signed or not, what the listen address exposes, and the clear word when the service cannot reach it). Never
    names the webhook key. Settings that match the running receiver change nothing (exactly one receiver, however
    often they are set)."""
    webhook_key = resolve_webhook_key(credentials_start(session.notebook))
    if not listen:
        said = []
        if session.callbacks is not None:
            session.disable_callbacks()
            said.append("imagen4: callbacks off; tasks are polled at the usual rate.")
        if public_url:
            said.append("imagen4: callback_url needs callback_listen (host:port of the receiver), e.g. "
                        "127.0.0.1:8765 behind a tunnel.")
        return said
    if session.callbacks is not None and session.callbacks.matches(listen, public_url or None, webhook_key):
        return []
    try:
        hub = session.enable_callbacks(public_url or None, listen=listen, webhook_key=webhook_key)
    except (E.Imagen4Error, OSError) as err:
        return [f"imagen4: callbacks not started: {err}"]
    signed = "signed: others are refused" if hub.signed else (
        "unsigned: set a webhook key to refuse forged ones (" + WEBHOOK_KEY_WAYS + ")")
    said = [f"imagen4: callbacks on at {hub.public_url}/<one-time token> ({signed}); each is a hint to check the "
            "task at once, and polling goes on, sparser, as a safety net."]
    if hub.exposure:
        said.append(f"imagen4: note: {hub.exposure}.")
    if hub.unreachable:
        said.append(f"imagen4: note: {hub.unreachable}.")
    return said


def trust_command(session: Session, say: Say, host: str) -> None:
    """`%imagen4 trust HOST`: this kernel may send the key to HOST although its address comes from a .env."""
    try:
        shown = trust_host(host)
    except E.ConfigurationError as err:
        raise CellError(err) from err
    session.begin()
    say(f"{shown} is trusted in this kernel: the key may go to it. " + describe(session), "ok")


def simulator_command(session: Session, say: Say, *, stop: bool, if_no_key: bool = False) -> None:
    """`%imagen4 simulator [--stop] [--if-no-key]`: start the simulator in this kernel and point the session at it
    (its own random key, never shown), or stop it and point the session back at the resolved real credentials.
    `if_no_key`: only when no key is configured (the first cell of a notebook that runs anywhere)."""
    global _simulator
    if if_no_key and not stop and not in_kernel(session) and session.credentials().has_key:
        creds, simulated = session.credentials(), is_simulator(session)
        if simulated:
            say(f"Using a simulator at {creds.base_url} (it answers as one): everything made is marked simulated, "
                f"nothing is billed; {creds.describe_key()}.")
        elif session.client.simulated is None:  # it could not be asked
            say(f"Using the service at {creds.base_url or 'its default address'}: {creds.describe_key()}.")
        else:
            say(f"Using the real service: {creds.describe_key()}.")
        return
    if stop:
        sim, _simulator = _simulator, None
        if sim is None and not in_kernel(session):
            say("No simulator is running.")
            return
        running = [j for j in session.pending() if session.is_simulated(j.task_id)]
        session.use_service(None)
        if sim is not None:
            sim.stop()
        if running:
            say(f"{len(running)} simulated task(s) were still running; they end with a connection error.", "error")
        say("Simulator stopped. " + describe(session))
        return
    if _simulator is None:
        import secrets

        from ..simulator import Simulator

        _simulator = Simulator(api_keys=("sim-" + secrets.token_urlsafe(24),), **SIMULATOR_OPTIONS).start()
    sim = _simulator
    session.use_service(Credentials(key=sim.api_keys[0], key_source=SIMULATOR, base_url=sim.url,
                                    url_source=SIMULATOR), simulated=True)
    say("Simulator started in this kernel: everything made now is marked simulated. " + describe(session), "ok")
