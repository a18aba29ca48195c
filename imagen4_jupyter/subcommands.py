"""`%imagen4 <subcommand>`: history, show, status, resume, wait, credits, panel.

`Subcommands` is a mixin of `Imagen4Magics`; `%imagen4 NAME REST` calls `_cmd_NAME(REST)`. Each handler
parses its own options (a short `UsageError` for bad ones, nothing sent) and talks to the kernel's session.
"""
from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from . import display as D
from . import errors as E

SUBCOMMANDS = ("history", "show", "status", "resume", "wait", "credits", "panel")


def short_error(err: BaseException) -> BaseException:
    """Make IPython show `err` as one line instead of a traceback (the exception type is kept)."""
    text = err.short() if isinstance(err, E.Imagen4Error) else f"{type(err).__name__}: {err}"
    err._render_traceback_ = lambda: [text]  # type: ignore[attr-defined]
    return err


def parse_line(parser: MagicArgumentParser, line: str) -> Any:
    """Parse a magic's line with shell-style quoting (`--negative "two words"` gives `two words`)."""
    import shlex

    try:
        argv = shlex.split(line)
    except ValueError as err:
        raise UsageError(f"Could not read the options: {err} (check the quotes).") from None
    return parser.parse_args(argv)


class Subcommands:
    """Mixin of `Imagen4Magics`: the `%imagen4 <subcommand>` handlers (the host provides `session`, `rich()`,
    `blocking()`, the views of `LiveViews` and the traits)."""

    def _subcommand(self, line: str) -> None:
        name, _, rest = line.strip().partition(" ")
        if not name:
            raise UsageError("Use %%imagen4 in a cell with a prompt, or %imagen4 <subcommand> with one of: "
                             f"{', '.join(SUBCOMMANDS)}. %imagen4? shows the help.")
        if name not in SUBCOMMANDS:
            raise UsageError(f"Unknown subcommand {name!r}; use one of: {', '.join(SUBCOMMANDS)} "
                             "(or %%imagen4 as a cell magic for a prompt).")
        return getattr(self, f"_cmd_{name}")(rest.strip())

    @staticmethod
    def _parser(name: str) -> MagicArgumentParser:
        return MagicArgumentParser(prog=f"%imagen4 {name}")

    def _task_id(self, name: str, rest: str) -> str:
        parser = self._parser(name)
        parser.add_argument("task_id")
        task_id = parse_line(parser, rest).task_id
        from .client import check_task_id

        try:
            return check_task_id(task_id)
        except E.InvalidRequestError as err:
            raise UsageError(str(err)) from None

    def _cmd_history(self, rest: str) -> None:
        parser = self._parser("history")
        parser.add_argument("--limit", type=int, default=20, help="at most N tasks (newest first)")
        parser.add_argument("--search", metavar="TEXT", help="only tasks whose prompt, seed or id contains TEXT")
        args = parse_line(parser, rest)
        if args.limit < 1:
            raise UsageError("--limit must be 1 or more.")
        history = self.session.history
        entries = history.search(args.search, limit=args.limit)
        entries = sorted(entries + self._unknown_entries(args.search), key=lambda e: e.submitted_at or 0,
                         reverse=True)[: args.limit]
        bundle = D.history_bundle(entries, history, thumbnails=self.rich())
        if self.rich():
            display(bundle, raw=True)
        else:
            print(bundle["text/plain"])

    def _unknown_entries(self, text: str | None) -> list:
        """Requests whose createTask outcome is unknown (no task id), as rows for the history table."""
        from .history import TaskEntry

        rows = []
        for ev in self.session.history.unknown:
            req = ev.get("request") if isinstance(ev.get("request"), dict) else {}
            hay = " ".join(str(req.get(k) or "") for k in ("prompt", "negative_prompt", "seed")).lower()
            if text and text.lower() not in hay:
                continue
            rows.append(TaskEntry(task_id="(no task id)", request=req, submitted_at=ev.get("time"),
                                  state="outcome unknown: check the Apikley dashboard before resubmitting"))
        return rows

    def _cmd_show(self, rest: str) -> None:
        task_id = self._task_id("show", rest)
        session = self.session
        job = session.jobs.get(task_id)
        if job is None:
            entry = session.history.get(task_id)
            if entry is None:
                raise UsageError(f"No task {task_id} in {session.history.path}; %imagen4 history lists the tasks.")
            if entry.state == "success" or entry.error is not None:
                job = session.job_from_history(entry)
            else:
                self._say(f"Task {task_id} is unfinished ({entry.state}); %imagen4 resume follows it again.")
                return
        if job.done():
            self._show_finished(job, self.embed)
        else:
            self._view(job).open()

    def _cmd_status(self, rest: str) -> None:
        task_id = self._task_id("status", rest)
        try:
            record = self.session.client.get_task(task_id)
        except E.Imagen4Error as err:
            raise short_error(err) from None
        bundle = D.record_bundle(record)
        if self.rich():
            display(bundle, raw=True)
        else:
            print(bundle["text/plain"])

    def _cmd_resume(self, rest: str) -> None:
        parser = self._parser("resume")
        parser.add_argument("--wait", action="store_true", help="block until the resumed tasks finish")
        parser.add_argument("--no-wait", action="store_true", help="return at once")
        args = parse_line(parser, rest)
        try:
            jobs = self.session.resume()
        except E.Imagen4Error as err:
            raise short_error(err) from None
        if not jobs:
            self._say(f"Nothing to resume: no unfinished tasks in {self.session.history.path}.")
            return
        self._say(f"Resuming {len(jobs)} unfinished task(s); no new task is created.")
        blocking = self.blocking("always" if args.wait else "never" if args.no_wait else None)
        views = [self._view(job, deferred=blocking).open() for job in jobs]
        if blocking:
            self._block_on(views)

    def _cmd_wait(self, rest: str) -> None:
        parser = self._parser("wait")
        parser.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
        args = parse_line(parser, rest)
        session = self.session
        pending = session.pending()
        if not pending:
            self._say("Nothing pending.")
            return
        try:
            session.wait_all(args.timeout if args.timeout is not None else self.timeout + 60.0)
        except E.TimeoutError as err:
            raise short_error(err) from None
        except KeyboardInterrupt:
            self._say("Interrupted; the tasks continue in the background.")
            return
        for job in pending:  # the history has every outcome ...
            self._recorded(job.task_id).wait(10)
        for view in self._live_views():  # ... and the cells' outputs are updated while this cell runs
            view.rendered.wait(10)
        ok = [j for j in pending if j.error is None]
        failed = [j for j in pending if j.error is not None]
        text = f"{len(pending)} task(s) finished: {len(ok)} succeeded"
        if failed:
            text += f", {len(failed)} failed ({', '.join(j.task_id for j in failed)})"
        self._say(text + ".", "error" if failed else "ok")

    def _cmd_credits(self, rest: str) -> None:
        if rest:
            raise UsageError("%imagen4 credits takes no arguments.")
        try:
            value = self.session.client.credits()
        except E.Imagen4Error as err:
            raise short_error(err) from None
        self.session.history.append({"event": "credits", "credits": value})
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
        self._say(f"Remaining credits: {shown}", "ok")

    def _cmd_panel(self, rest: str) -> None:
        if rest:
            raise UsageError("%imagen4 panel takes no arguments.")
        try:
            from .panel import Panel
        except ModuleNotFoundError as err:
            if err.name and err.name.endswith("panel"):
                self._say("The panel is not available in this installation (imagen4_jupyter.panel is missing).",
                          "error")
                return
            raise
        close_panels()  # an older panel would stay subscribed to the session (and keep its thread) for ever
        panel = Panel(session=self.session)
        _panels.append(panel)
        display(panel)


_panels: list = []  # the panels `%imagen4 panel` opened in this kernel (module-level: outlives a reload)


def close_panels() -> None:
    """Close the panels `%imagen4 panel` opened: they stop listening to the session; their outputs go blank."""
    while _panels:
        panel = _panels.pop()
        try:
            panel.close()
        except Exception:  # a half-built or already closed panel: nothing left to release
            pass
