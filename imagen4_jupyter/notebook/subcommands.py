"""`%imagen4 <subcommand>`: history, show, status, resume, wait, credits, panel, batch, key, webhook-key, trust,
simulator, info.

One parser, built once (`commands()`): an argparse sub-parser per subcommand whose `handler` default is the
`Subcommands` method that runs it. The magic owns a `Subcommands` and calls `run(line)`; bad options are a
short `UsageError` (with "did you mean ..." for a mistyped flag or subcommand) and nothing is sent.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from ..api import cards as C
from ..api import errors as E
from . import cellview, service
from . import outputs as D
from .cellview import LiveViews, settled
from .options import (
    DEFAULT_TIMEOUT,
    SUBCOMMANDS,
    CellError,
    Command,
    add_flow_flags,
    add_request_flags,
    did_you_mean,
    parse_words,
    split_line,
    wait_override,
)
from .sources import split_source

HISTORY_LIMIT = 20
CONCURRENCY = 4


class Host(cellview.Host, Protocol):
    """What the subcommands read from the magic: its traits, shell and request defaults."""

    reuse: str
    shell: Any

    def blocking(self, override: str | None = None) -> bool: ...

    def request_defaults(self, args: Any) -> dict[str, Any]: ...

    def require_key(self) -> None: ...

    def refresh_callbacks(self) -> None: ...


class Subcommands:
    """Runs `%imagen4 <subcommand>` lines for the magic (`host`), showing results through its `views`."""

    def __init__(self, host: Host, views: LiveViews):
        self.host, self.views = host, views

    def run(self, line: str) -> None:
        name, _, rest = line.strip().partition(" ")
        parser, table = commands()
        if name in ("--help", "-h", "help"):
            print(self.host.shell.find_line_magic("imagen4").__doc__)
            return
        if not name:
            raise UsageError("Use %%imagen4 in a cell with a prompt, or %imagen4 <subcommand> with one of: "
                             f"{', '.join(SUBCOMMANDS)}. %imagen4? shows the help.")
        if name not in table:
            hint = did_you_mean(name, SUBCOMMANDS)
            raise UsageError(f"Unknown subcommand {name!r}{f' ({hint})' if hint else ''}; use one of: "
                             f"{', '.join(SUBCOMMANDS)} (or %%imagen4 as a cell magic for a prompt).")
        command = table[name]
        if name == "batch":
            source, rest = split_source(rest)
            words = [source, *split_line(rest)]
        else:
            words = split_line(rest)
        if words and not command.actions:
            raise UsageError(f"%imagen4 {name} takes no arguments.")
        args = parse_words(parser, [name, *words], known=command.options())
        args.handler(self, args)

    def task_id(self, args: Any) -> str:
        from ..api.client import check_task_id

        try:
            return check_task_id(args.task_id)
        except E.InvalidRequestError as err:
            raise UsageError(str(err)) from None

    # -- the handlers (one per subcommand) ------------------------------------------------------
    def history(self, args: Any) -> None:
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be 1 or more.")
        if args.export is not None:
            if args.search is not None or args.limit is not None:
                raise UsageError("--export writes the whole history; leave out --limit and --search.")
            return self._export(args.export)
        limit = args.limit or HISTORY_LIMIT
        history = self.host.session.history
        entries = history.search(args.search, limit=limit)
        entries = sorted(entries + self._unknown_entries(args.search), key=lambda e: e.submitted_at or 0,
                         reverse=True)[:limit]
        rich = self.host.rich()
        bundle = D.history_bundle(entries, history, thumbnails=rich, base=self.views.output_base())
        if rich:
            display(bundle, raw=True)
        else:
            print(bundle["text/plain"])
        return None

    def _export(self, target: str) -> None:
        from ..records.export import export_history

        if not target.lower().endswith((".csv", ".json")):
            raise UsageError(f"--export writes a .csv or a .json file, not {target!r}.")
        try:
            path = export_history(self.host.session, target)
        except OSError as err:
            raise UsageError(f"Could not write {target}: {err.strerror or err}") from None
        self.views.say(f"Exported {_count_rows(path)} task(s) to {path.resolve()}", "ok")

    def _unknown_entries(self, text: str | None) -> list:
        """Requests whose createTask outcome is unknown (no task id), as rows for the history table."""
        from ..records.callback_hub import resolved_refs
        from ..records.history import TaskEntry

        rows, resolved = [], resolved_refs(self.host.session.history)  # a callback named their task
        for ev in self.host.session.history.unknown:
            if ev.get("callback_ref") in resolved:
                continue
            req = ev.get("request")
            req = req if isinstance(req, dict) else {}
            hay = " ".join(str(req.get(k) or "") for k in ("prompt", "negative_prompt", "seed")).lower()
            if text and text.lower() not in hay:
                continue
            rows.append(TaskEntry(task_id="(no task id)", request=req, submitted_at=ev.get("time"),
                                  state="outcome unknown",  # a stage's words (`outcome_unknown`), not a sentence
                                  error={"message": "check the Apikley dashboard before resubmitting"}))
        return rows

    def show(self, args: Any) -> None:
        task_id = self.task_id(args)
        session = self.host.session
        job = session.jobs.get(task_id)
        entry = session.history.get(task_id) if job is None or job.done() else None
        if entry is not None and entry.succeeded and not session.history.images_on_disk(entry):  # files deleted
            self.host.require_key()
            self.views.say(f"The image files of {task_id} are gone; downloading them again (no new task).")
            return self.views.follow(session.resume([entry]), self.host.blocking())
        if job is None:
            if entry is None:
                raise UsageError(f"No task {task_id} in {session.history.path}; %imagen4 history lists the tasks.")
            if entry.state == "success" or entry.error is not None:
                job = session.job_from_history(entry)
            else:
                self.views.say(f"Task {task_id} is unfinished ({entry.state}); %imagen4 resume follows it again.")
                return
        if job.done():
            self.views.show_finished(job, self.host.embed)
        else:
            self.views.open(job)

    def status(self, args: Any) -> None:
        from ..records.simulated import gone_status

        task_id = self.task_id(args)
        gone = gone_status(self.host.session, task_id)  # a simulated task whose simulator ended: no key, no request
        if gone is not None:
            self.views.say(gone)
            return
        self.host.require_key()
        try:
            record = self.host.session.client.get_task(task_id)
        except E.Imagen4Error as err:
            raise CellError(err) from err
        bundle = D.record_bundle(record, simulated=self.host.session.client.simulated is True)
        if self.host.rich():
            display(bundle, raw=True)
        else:
            print(bundle["text/plain"])

    def resume(self, args: Any) -> None:
        from ..records.simulated import settle_gone

        session = self.host.session
        gone = settle_gone(session)[1]  # simulated tasks whose simulator ended: closed in the history, one line each
        for line in gone:
            self.views.say(line)
        if session.history.unfinished():
            self.host.require_key()
        try:
            jobs = session.resume()
        except E.Imagen4Error as err:
            raise CellError(err) from err
        if not jobs:
            if not gone:
                self.views.say(f"Nothing to resume: no unfinished tasks in {session.history.path}.")
            return
        from ..records.sendlog import resume_summary
        self.views.say(resume_summary(jobs))
        self.views.follow(jobs, self.host.blocking(wait_override(args)))

    def wait(self, args: Any) -> None:
        session = self.host.session
        pending = session.pending()
        if not pending:
            self.views.say("Nothing pending.")
            return
        limit = args.timeout if args.timeout is not None else self.host.timeout + 60.0
        deadline = time.monotonic() + limit
        waited: set[int] = set()
        try:
            while left := [j for j in session.pending() if id(j) not in waited]:  # jobs started meanwhile too
                for job in left:
                    if not settled(job, max(0.0, deadline - time.monotonic())):
                        err = E.Imagen4TimeoutError(f"{len(session.pending())} task(s) still running after "
                                                    f"{limit:g} s.")
                        raise CellError(err) from err
                    waited.add(id(job))
        except KeyboardInterrupt:
            self.views.say("Interrupted; the tasks continue in the background.")
            return
        # a settled job's history record and cell outputs are written: its final change callbacks ran
        failed = [j for j in pending if j.error is not None]
        text = f"{len(pending)} task(s) finished: {len(pending) - len(failed)} succeeded"
        if failed:
            text += f", {len(failed)} failed ({', '.join(j.task_id or 'not sent' for j in failed)})"
        self.views.say(text + ".", "error" if failed else "ok")

    def credits(self, args: Any) -> None:
        session = self.host.session
        self.host.require_key()
        try:
            value = session.client.credits()
        except E.Imagen4Error as err:
            raise CellError(err) from err
        simulated = session.client.simulated is True  # the answer came from a simulator
        session.history.append({"event": "credits", "credits": value, **({"simulated": True} if simulated else {})})
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
        self.views.say(f"Remaining credits: {shown}" + (" (simulated)" if simulated else ""), "ok")

    def spend(self, args: Any) -> None:
        from ..records.spend import spend_bundle, spend_summary

        session = self.host.session
        summary = spend_summary(session.history, session.spending.prices)
        where = C.shown_path(session.history.path, self.views.output_base())
        if not session.history.entries() and not summary.reused_tasks:  # no task at all: nothing to tabulate
            budget = session.spending.budget
            left = "" if budget is None else f"; the kernel's budget of {budget:g} credits is untouched"
            self.views.say(f"Nothing spent yet: no tasks in {where}{left}.")
            return
        display(spend_bundle(summary, where, session.spending), raw=True)

    def panel(self, args: Any) -> None:
        try:
            from .panel import Panel
        except ModuleNotFoundError as err:
            if err.name and err.name.endswith("panel"):
                self.views.say("The panel is not available in this installation "
                               "(imagen4_jupyter.notebook.panel is missing).", "error")
                return
            raise
        close_panels()  # an older panel would stay subscribed to the session (and keep its thread) for ever
        panel = Panel(session=self.host.session)
        _panels.append(panel)
        display(panel)

    def batch(self, args: Any) -> None:
        from .batch_command import run_batch

        run_batch(self.host, self.views, args)

    def key(self, args: Any) -> None:
        service.key_command(self.host.session, self.views.say)

    def webhook_key(self, args: Any) -> None:
        if service.webhook_key_command(self.views.say):
            self.host.refresh_callbacks()

    def trust(self, args: Any) -> None:
        service.trust_command(self.host.session, self.views.say, args.host)

    def simulator(self, args: Any) -> None:
        service.simulator_command(self.host.session, self.views.say, stop=args.stop, if_no_key=args.if_no_key)

    def info(self, args: Any) -> None:
        print(service.describe(self.host.session, ask=True))


@functools.cache
def commands() -> tuple[MagicArgumentParser, dict[str, Command]]:
    """The `%imagen4` parser (built once) and its subcommands by name."""
    parser = MagicArgumentParser(prog="%imagen4")
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    table: dict[str, Command] = {}

    def command(name: str, handler: Callable[..., None], summary: str) -> Command:
        table[name] = Command(name, summary, subparsers.add_parser(name, prog=f"%imagen4 {name}"), handler)
        return table[name]

    c = command("history", Subcommands.history, "earlier tasks: time, prompt, parameters, state, id, "
                "thumbnails; --export FILE.csv or FILE.json writes every task to a file (paths relative to it)")
    c.add("--limit", type=int, metavar="N", help=f"At most N tasks, newest first (default: {HISTORY_LIMIT}).")
    c.add("--search", metavar="TEXT", help="Only tasks whose prompt, seed or id contains TEXT.")
    c.add("--export", metavar="FILE", help="Write every task to FILE.csv or FILE.json instead.")
    c = command("show", Subcommands.show, "a task's stored images (or its live status)")
    c.add("task_id", metavar="TASK_ID")
    c = command("status", Subcommands.status, "ask the service about a task now")
    c.add("task_id", metavar="TASK_ID")
    c = command("resume", Subcommands.resume, "follow tasks left unfinished (e.g. by a kernel restart)")
    c.add("--wait", action="store_true", help="Block until the resumed tasks finish (default in headless runs).")
    c.add("--no-wait", action="store_true", help="Return at once (default in interactive notebooks).")
    c = command("wait", Subcommands.wait, "block until every pending task has finished")
    c.add("--timeout", type=float, metavar="SECONDS",
          help=f"Give up after SECONDS (default: {DEFAULT_TIMEOUT + 60:g}, the timeout trait plus 60).")
    command("credits", Subcommands.credits, "the account's remaining credits")
    command("spend", Subcommands.spend, "this notebook's spend from its history, by model and by day, what reuse "
            "saved, and this kernel's budget")
    command("panel", Subcommands.panel, "the interactive widget panel")
    c = command("batch", Subcommands.batch, "many prompts: SOURCE is a list variable, a CSV file with a prompt "
                "column (other request columns used), or df['prompt']")
    c.add("source", metavar="SOURCE", help="A list variable, a CSV file or a DataFrame column.")
    add_request_flags(c.add, batch=True)
    c.add("-c", "--concurrency", type=int, default=CONCURRENCY, metavar="N",
          help=f"At most N tasks in flight at once (default: {CONCURRENCY}).")
    c.add("--budget", type=float, metavar="N", help="The credits this batch may spend, by estimate: it stops "
          "sending before the first new item that would pass it (reused items cost nothing).")
    c.add("--dry-run", action="store_true", help="Show the plan (reused items, tasks to create per model, estimated "
          "credits, the balance) and send nothing.")
    add_flow_flags(c.add, batch=True)
    command("key", Subcommands.key, "type the API key at a masked prompt (kept in this kernel's memory only; "
            "needs an interactive front-end)")
    command("webhook-key", Subcommands.webhook_key, "type the webhook HMAC key at a masked prompt (kept in this "
            "kernel's memory only; callbacks then must be signed with it)")
    c = command("trust", Subcommands.trust, "let this kernel send the key to HOST, an address from a .env while the "
                "key comes from elsewhere (APIKLEY_TRUSTED_HOSTS does the same for every kernel)")
    c.add("host", metavar="HOST", help="The host name (or host:port) to trust, as the refusal names it.")
    c = command("simulator", Subcommands.simulator, "start a simulator of the service in this kernel and use it "
                "(its own key; everything made says simulated)")
    c.add("--stop", action="store_true", help="Stop it and go back to the real service.")
    c.add("--if-no-key", action="store_true", help="Only when no API key is configured (else: the real service).")
    command("info", Subcommands.info, "which service is in use, whether a key is set and from where, the history "
            "file")
    assert tuple(table) == SUBCOMMANDS
    return parser, table


def help_text() -> str:
    """The subcommands' part of `%%imagen4?`: each one's usage and what it does."""
    import textwrap

    lines = ["Line magic -- %imagen4 <subcommand>:"]
    for command in commands()[1].values():
        lines += [f"  {command.usage()}", textwrap.fill(command.summary, 108, initial_indent=" " * 8,
                                                          subsequent_indent=" " * 8)]
    return "\n".join(lines)


def _count_rows(path: Any) -> int:
    import csv
    import json

    with open(path, newline="", encoding="utf-8") as fh:
        if str(path).lower().endswith(".json"):
            return len(json.load(fh))
        return sum(1 for _ in csv.DictReader(fh))


_panels: list = []  # the panels `%imagen4 panel` opened in this kernel (module-level: outlives a reload)


def close_panels() -> None:
    """Close the panels `%imagen4 panel` opened: they stop listening to the session; their outputs go blank."""
    while _panels:
        panel = _panels.pop()
        try:
            panel.close()
        except Exception:  # a half-built or already closed panel: nothing left to release
            pass
