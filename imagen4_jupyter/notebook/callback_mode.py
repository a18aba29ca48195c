"""`%config Imagen4Magics.callback_listen / callback_url / webhook_key`: the session's callback receiver, started,
restarted or stopped as the traits say, with one line about it (records/callback_hub.py does the work)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..api import errors as E

if TYPE_CHECKING:
    from ..records.session import Session

HIDDEN = "(set)"  # what the webhook_key trait shows: the key itself stays in memory, never printed


def apply_callbacks(session: Session, listen: str, public_url: str, webhook_key: str | None) -> list[str]:
    """Make the session's callbacks match the traits; the lines to print (the URL, signed or not, and the clear
    word when the service cannot reach it). Never names the webhook key."""
    if not listen:
        said = []
        if session.callbacks is not None:
            session.disable_callbacks()
            said.append("imagen4: callbacks off; tasks are polled at the usual rate.")
        if public_url:
            said.append("imagen4: callback_url needs callback_listen (host:port of the receiver), e.g. 0.0.0.0:8765.")
        return said
    try:
        hub = session.enable_callbacks(public_url or None, listen=listen, webhook_key=webhook_key)
    except (E.Imagen4Error, OSError) as err:
        return [f"imagen4: callbacks not started: {err}"]
    signed = "signed: others are refused" if hub.signed else (
        "unsigned: set webhook_key or APIKLEY_WEBHOOK_KEY to refuse forged ones")
    said = [f"imagen4: callbacks on at {hub.public_url}/<one-time token> ({signed}); each is a hint to check the "
            "task at once, and polling goes on, sparser, as a safety net."]
    if hub.unreachable:
        said.append(f"imagen4: note: {hub.unreachable}.")
    return said
