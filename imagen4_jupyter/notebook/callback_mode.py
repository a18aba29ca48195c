"""`%config Imagen4Magics.callback_listen / callback_url`: the session's callback receiver, started, restarted or
stopped as the traits say, with one line about it (records/callback_hub.py does the work). The webhook key is not
a trait one sets: it comes from APIKLEY_WEBHOOK_KEY, a .env, or `%imagen4 webhook-key` (a masked prompt), so it
never sits in a line IPython saves."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..api import errors as E

if TYPE_CHECKING:
    from ..records.session import Session

HIDDEN = "(set)"  # what the webhook_key trait shows while a key is in force: never the key itself
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
    from ..api.credentials import webhook_key as resolve_webhook_key
    from ..records.location import credentials_start

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
