"""The panel's missing-key banner: shown while the session has no API key, with Generate off and the reason.

Two ways out from the panel itself: "Enter key…" inserts a `%imagen4 key` cell below (running it asks for the
key with a masked prompt, kept in memory only: a widget's text box could end up in saved widget state, so the
key is never typed into one), and "Use the simulator" starts `%imagen4 simulator` in this kernel. The other
ways (the environment, a `.env` file) are named in the banner. The key itself is never read here: only
whether one is set.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ...api.cards import esc
from ...api.credentials import ENV_KEY

NO_KEY = "No API key yet, so Generate is off."
KEY_CELL = "%imagen4 key"


class KeyBanner(W.VBox):
    """`check()` shows or hides the banner and returns the reason Generate is off ('' with a key). `insert_key`
    puts the `%imagen4 key` cell below the panel; `start_simulator` starts the in-kernel simulator."""

    def __init__(self, session: Any, insert_key: Callable[[], object], start_simulator: Callable[[], str]):
        self.session = session
        self.start_simulator = start_simulator
        self.text = W.HTML()
        self.text.add_class("imagen4-banner-text")
        self.enter = W.Button(description="Enter key…", icon="key", layout=W.Layout(width="auto"),
                              tooltip=f"Insert a {KEY_CELL} cell below; run it to type the key (hidden, kept in "
                                      "this kernel's memory only)")
        self.enter.add_class("imagen4-enter-key")
        self.simulate = W.Button(description="Use the simulator", icon="flask", layout=W.Layout(width="auto"),
                                 tooltip="Start %imagen4 simulator in this kernel: try everything, nothing is billed")
        self.simulate.add_class("imagen4-use-simulator")
        self.again = W.Button(description="Check again", icon="refresh", layout=W.Layout(width="auto"),
                              tooltip="Look for a key again (after setting it in a cell or a .env file)")
        self.again.add_class("imagen4-check-key")
        self.status = W.HTML()
        self.status.add_class("imagen4-banner-status")
        buttons = W.HBox([self.enter, self.simulate, self.again],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        buttons.add_class("imagen4-row")
        super().__init__([self.text, buttons, self.status], layout=W.Layout(display="none", width="100%"))
        self.add_class("imagen4-banner")
        self.enter.on_click(lambda _b: insert_key())
        self.simulate.on_click(lambda _b: self._simulate())
        self.reason = ""
        self.on_change: Callable[[], object] | None = None  # the panel revalidates its controls
        self.again.on_click(lambda _b: self._changed())

    def has_key(self) -> tuple[bool, str]:
        """Whether the session's client has a key now (looked up again: a key set meanwhile counts)."""
        try:
            return bool(self.session.client.has_key), ""
        except Exception as err:  # no client can be made (a bad base URL): say why
            return False, f"No client can be made: {err}"

    def check(self) -> str:
        """Show the banner while there is no key; the reason Generate is off, or ''."""
        ok, problem = self.has_key()
        if ok:
            self.layout.display = "none"
            self.reason = ""
            return ""
        self.reason = " ".join((problem or NO_KEY).split())
        self.text.value = (f"<b>{esc(self.reason)}</b> Set <code>{ENV_KEY}</code> (in a cell: "
                           f"<code>os.environ[{ENV_KEY!r}] = ...</code>), put it in a <code>.env</code> file beside "
                           f"the notebook, or type it with <code>{KEY_CELL}</code> (kept in memory only). "
                           "To try the panel without an account, use the simulator.")
        self.layout.display = "flex"
        return self.reason

    def _simulate(self) -> None:
        try:
            said = self.start_simulator()
        except Exception as err:  # never lose a click silently
            self.status.value = f"<span class='imagen4-error'>Could not start the simulator: {esc(err)}</span>"
            return
        self.status.value = esc(said)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
