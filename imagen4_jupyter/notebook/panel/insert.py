""""Insert as code": the `%%imagen4` cell that sends a request, and the view that puts it below the panel's cell.

The browser side is JavaScript kept in package data files (`insert.js`, `copy.js`), run through the trusted
output of a hidden `Output` widget; it reports back through a hidden text box. The "Inserted" notice and the code
box fade away a few seconds after the cell is in (`later` schedules that on the client's poller).
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from functools import cache
from importlib.resources import files

import ipywidgets as W

from ...api.cards import esc
from ...api.models import DEFAULT_MODEL, short_name
from ...api.request import GenerationRequest

__all__ = ["cell_code", "code_problem", "script", "InsertAsCode"]

FADE_AFTER = 8.0  # seconds the "Inserted" notice and the code box stay after a cell was inserted


def brace_escape(text: str) -> str:
    """The magic interpolates `{name}`; `{{` / `}}` are literal braces, so every brace is doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def cell_code(request: GenerationRequest) -> str:
    """The `%%imagen4` cell that sends exactly `request` (flags explicit, so %config defaults don't matter).

    Braces are doubled (the magic interpolates `{name}`). A seed holding spaces or quotes cannot be one
    flag token for IPython's argument splitter; `code_problem` says so and the code is shown anyway.
    """
    flags = ["-a", request.aspect_ratio, "-n", str(request.num_images)]
    if request.model != DEFAULT_MODEL:
        flags = ["-m", short_name(request.model), *flags]
    if request.seed is not None:
        flags += ["-s", brace_escape(request.seed)]
    body = brace_escape(request.prompt)
    if request.negative_prompt:
        body += "\n---\n" + brace_escape(request.negative_prompt)
    return "%%imagen4 " + " ".join(flags) + "\n" + body


def code_problem(request: GenerationRequest) -> str | None:
    """Why `cell_code(request)` would not send exactly this request, or None."""
    if request.seed is not None and (not request.seed.strip() or any(c.isspace() or c in "'\"" for c in request.seed)):
        return "the seed contains spaces or quotes, which the -s flag cannot hold; edit the cell's seed"
    if any(line.strip() == "---" for line in request.prompt.splitlines()):
        return "the prompt has a line holding only ---, which the cell reads as the negative prompt separator"
    return None


@cache
def _source(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def script(name: str, token: str, **args: object) -> str:
    """The JavaScript of `<name>.js` (which defines `imagen4<Name>(args)`) followed by its call with `args`,
    the `token` and the time it was made (the script runs once per token and never when stale)."""
    args = {"token": token, "created": int(time.time() * 1000), **args}
    return f"{_source(name + '.js')}\nimagen4{name.capitalize()}({json.dumps(args)});\n"


class InsertAsCode(W.VBox):
    """The status line and the code box (the fallback to copy by hand), with the hidden script output and
    report box the browser side talks through."""

    def __init__(self, later: Callable[[float, Callable[[], None]], None] | None = None) -> None:
        self.later = later
        self.code = W.Textarea(rows=3, layout=W.Layout(width="100%", display="none"))
        self.code.add_class("imagen4-code")
        self.status = W.HTML()
        self.status.add_class("imagen4-insert-status")
        self.js_out = W.Output(layout=W.Layout(display="none"))
        self.js_out.add_class("imagen4-js")
        self.report = W.Text(layout=W.Layout(display="none"))
        self.report.add_class("imagen4-insert-report")
        self.token: str | None = None  # the running insert's; a report with another token is stale
        self.note = ""
        super().__init__([self.js_out, self.report, self.status, self.code], layout=W.Layout(width="100%"))
        self.report.observe(self._on_report, names="value")

    def insert(self, request: GenerationRequest) -> str:
        """Show the cell's code and ask the browser to insert it below the panel's cell; returns the code."""
        problem = code_problem(request)
        return self.insert_text(cell_code(request), f"Note: {problem}." if problem else "")

    def insert_text(self, code: str, note: str = "") -> str:
        """Show `code` and ask the browser to insert it as a cell below the panel's cell; returns it."""
        self.code.value = code
        self.code.rows = min(12, code.count("\n") + 1)
        self.code.layout.display = "flex"
        self.note = f" <span class='imagen4-reason'>{esc(note)}</span>" if note else ""
        self.status.value = "Inserting the cell below… (if none appears, copy the code from the box)" + self.note
        self.token = uuid.uuid4().hex
        self.run(script("insert", self.token, code=code))
        return code

    def fade(self, token: str | None) -> None:
        """Clear the notice and hide the code box, unless another insert started since."""
        if token is not None and token == self.token:
            self.status.value = ""
            self.code.layout.display = "none"

    def copy(self, text: str) -> None:
        """Copy `text` to the clipboard in the browser (and select the seed box, the fallback)."""
        self.run(script("copy", uuid.uuid4().hex, text=text))

    def say(self, html: str) -> None:
        self.status.value = html

    def run(self, js: str) -> None:
        self.js_out.outputs = ({"output_type": "display_data",
                                "data": {"application/javascript": js, "text/plain": "<imagen4 script>"},
                                "metadata": {}},)

    def _on_report(self, change: dict) -> None:
        token, _, message = str(change["new"]).partition(" ")
        if not token or token != self.token:
            return
        self.js_out.outputs = ()
        if message == "ok":
            self.status.value = "Inserted the cell below. The code is also here:" + self.note
            if self.later is not None:
                try:
                    self.later(FADE_AFTER, lambda: self.fade(token))
                except Exception:  # no client to time it: the notice stays
                    pass
        else:
            self.status.value = (f"<span class='imagen4-reason'>Could not insert a cell "
                                 f"({esc(message.removeprefix('fail: '))}); copy the code from the box.</span>")
