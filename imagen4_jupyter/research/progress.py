"""The live progress line of a batch: an HTML display updated in place inside a Jupyter kernel, text on stderr
elsewhere. It knows nothing of the runner: `update()` receives a `ProgressState` of plain numbers, the counts
of `results.item_counts` (their words and which of them are failures come from `results.py` too)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..api.cards import esc
from .results import BUCKETS, COUNT_NAMES, FAILURE_BUCKETS


def ipython_shell() -> Any:
    """The running IPython shell, or None (IPython is not imported just to ask)."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython

        return get_ipython()
    except Exception:  # pragma: no cover
        return None


@dataclass
class ProgressState:
    """What the progress line shows: item counts (`COUNT_NAMES`), the shared rate-limit pause still to wait
    (0 when none, or nothing left to send), the 429 answers so far and the seconds since the start."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0))
    waiting_s: float = 0.0
    rate_limited: int = 0
    elapsed_s: float | None = None


class Progress:
    """A progress line for `total` items; `label` (the batch's models, say "ultra") follows "imagen4 batch"."""

    def __init__(self, total: int, label: str | None = None):
        self.total = total
        self.label = label
        self.plan = ""  # the batch's plan, shown once above the line (`announce`)
        self.handle = None
        self.last = 0.0
        self.last_line = ""
        self.last_printed_done = -1
        self.tty = False
        ip = ipython_shell()
        if ip is not None and getattr(ip, "kernel", None) is not None:
            from IPython.display import display

            self.handle = display(self._bundle(ProgressState()), raw=True, display_id=True)
        else:
            self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())

    def _text(self, state: ProgressState, final: bool = False) -> str:
        c = state.counts
        parts = [f"{c['done']}/{self.total} done"]
        if c.get("running"):
            parts.append(f"{c['running']} running")
        if c.get("reused"):
            parts.append(f"{c['reused']} reused")
        parts += [f"{c[b]} {words}" for b, words in BUCKETS.items()
                  if b not in ("success", "running", "pending") and c.get(b)]
        if state.waiting_s > 0 and not final:
            parts.append(f"rate limited: waiting {state.waiting_s:.0f} s")
        if state.rate_limited:
            parts.append(f"{state.rate_limited}×429")
        if state.elapsed_s is not None:
            parts.append(f"{state.elapsed_s:.0f} s")
        return f"imagen4 batch{f' ({self.label})' if self.label else ''}: " + " · ".join(parts)

    def _bundle(self, state: ProgressState, final: bool = False) -> dict[str, str]:
        c = state.counts
        text = self._text(state, final)
        failed = any(c.get(b) for b in FAILURE_BUCKETS)
        colour = "#b91c1c" if failed and final else "#2563eb"
        plan = f'<div style="color:var(--jp-ui-font-color2,#555)">{esc(self.plan)}</div>' if self.plan else ""
        html = (f'<div style="font-family:var(--jp-ui-font-family,sans-serif);font-size:13px">{plan}'
                f'<progress value="{c["done"]}" max="{max(1, self.total)}" style="width:220px;'
                f'vertical-align:middle;accent-color:{colour}"></progress> {esc(text)}</div>')
        return {"text/html": html, "text/plain": f"{self.plan}\n{text}" if self.plan else text}

    def announce(self, line: str) -> None:
        """Show the batch's plan before it starts: above the line in a notebook, one line on stderr elsewhere."""
        self.plan = line
        if self.handle is not None:
            self.handle.update(self._bundle(ProgressState()), raw=True)
            return
        print(line, file=sys.stderr, flush=True)

    def due(self, final: bool = False) -> bool:
        """True if an update now would be shown (at most four a second; the final one always)."""
        return final or time.monotonic() - self.last >= 0.25

    def update(self, state: ProgressState, final: bool = False) -> None:
        if not self.due(final):
            return
        self.last = time.monotonic()
        if self.handle is not None:
            self.handle.update(self._bundle(state, final), raw=True)
            return
        line = self._text(state, final)
        if self.tty:
            pad = " " * max(0, len(self.last_line) - len(line))
            sys.stderr.write("\r" + line + pad + ("\n" if final else ""))
            sys.stderr.flush()
            self.last_line = line
            return
        done = state.counts["done"]
        step = max(1, self.total // 10)
        if final or done >= self.last_printed_done + step:
            self.last_printed_done = done
            print(line, file=sys.stderr, flush=True)
