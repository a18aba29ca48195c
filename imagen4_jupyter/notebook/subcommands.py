"""`%imagen4 <subcommand>`: history, show, status, resume, wait, credits, panel, batch.

`Subcommands` is a mixin of `Imagen4Magics`; `%imagen4 NAME REST` calls `_cmd_NAME(REST)`. Each handler
parses its own options (a short `UsageError` for bad ones, nothing sent) and talks to the kernel's session.
"""
from __future__ import annotations

import threading
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

from ..api import cards as C
from ..api import errors as E
from . import outputs as D

SUBCOMMANDS = ("history", "show", "status", "resume", "wait", "credits", "panel", "batch")


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


def batch_source(text: str, namespace: dict) -> tuple[Any, str]:
    """What `%imagen4 batch SOURCE` names, and how to call it in messages: a list variable (`prompts`), a CSV
    file (`prompts.csv`: its rows as dicts) or a variable with one subscript or attribute (`df['prompt']`,
    `df.prompt`). Nothing is evaluated: the name is looked up in `namespace`, then indexed once."""
    import ast
    import os

    if text.lower().endswith((".csv", ".tsv")) or os.sep in text or "/" in text or os.path.isfile(text):
        return csv_items(text), text
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        node = None
    key: Any = None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        if not (isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, (str, int))):
            raise UsageError(f"{text}: only one literal subscript is understood, such as df['prompt'].")
        name, key = node.value.id, ("item", node.slice.value)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.attr.startswith("_"):
            raise UsageError(f"{text}: a private attribute cannot be a batch source.")
        name, key = node.value.id, ("attr", node.attr)
    elif isinstance(node, ast.Name):
        name = node.id
    else:
        raise UsageError(f"{text!r} is not a list variable, a .csv file, or a column such as df['prompt'] or "
                         "df.prompt.")
    if name not in namespace:
        raise UsageError(f"No variable named {name!r} (and no file {text!r}); define it first.")
    value = namespace[name]
    if key is None:
        return value, text
    kind, k = key
    try:
        return (value[k] if kind == "item" else getattr(value, k)), text
    except (KeyError, IndexError, AttributeError, TypeError):
        what = f"column or key {k!r}" if kind == "item" else f"attribute {k!r}"
        columns = getattr(value, "columns", None)
        hint = f" (columns: {', '.join(map(str, columns))})" if columns is not None else ""
        raise UsageError(f"{name} has no {what}{hint}.") from None


def csv_items(path: str) -> list[dict]:
    """The rows of a CSV file as request dicts: a `prompt` column is required; the other request-field columns
    (negative_prompt, aspect_ratio, num_images, seed, callback_url) are used when present, empty cells take the
    defaults, and other columns are ignored."""
    import csv

    from ..research.batch import REQUEST_FIELDS

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or [] if c]
            if "prompt" not in columns:
                raise UsageError(f"{path} has no 'prompt' column (columns: {', '.join(columns) or 'none'}).")
            items = []
            for row in reader:
                item = {k.strip(): v.strip() for k, v in row.items()
                        if k and k.strip() in REQUEST_FIELDS and isinstance(v, str) and v.strip()}
                if item or any(isinstance(v, str) and v.strip() for v in row.values()):
                    items.append(item)
    except FileNotFoundError:
        raise UsageError(f"No file {path}.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"Could not read {path}: {err}") from None
    if not items:
        raise UsageError(f"{path} has no rows.")
    return items


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
        from ..api.client import check_task_id

        try:
            return check_task_id(task_id)
        except E.InvalidRequestError as err:
            raise UsageError(str(err)) from None

    def _cmd_history(self, rest: str) -> None:
        parser = self._parser("history")
        parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N tasks (newest first)")
        parser.add_argument("--search", metavar="TEXT", help="only tasks whose prompt, seed or id contains TEXT")
        parser.add_argument("--export", metavar="FILE", help="write every task to FILE.csv or FILE.json instead")
        args = parse_line(parser, rest)
        if args.limit < 1:
            raise UsageError("--limit must be 1 or more.")
        if args.export is not None:
            if args.search is not None or "--limit" in rest:
                raise UsageError("--export writes the whole history; leave out --limit and --search.")
            return self._export(args.export)
        history = self.session.history
        entries = history.search(args.search, limit=args.limit)
        entries = sorted(entries + self._unknown_entries(args.search), key=lambda e: e.submitted_at or 0,
                         reverse=True)[: args.limit]
        bundle = D.history_bundle(entries, history, thumbnails=self.rich(), base=self.output_base())
        if self.rich():
            display(bundle, raw=True)
        else:
            print(bundle["text/plain"])

    def _export(self, target: str) -> None:
        from ..records.export import export_history

        if not target.lower().endswith((".csv", ".json")):
            raise UsageError(f"--export writes a .csv or a .json file, not {target!r}.")
        try:
            path = export_history(self.session, target)
        except OSError as err:
            raise UsageError(f"Could not write {target}: {err.strerror or err}") from None
        self._say(f"Exported {_count_rows(path)} task(s) to {path.resolve()}", "ok")

    def _unknown_entries(self, text: str | None) -> list:
        """Requests whose createTask outcome is unknown (no task id), as rows for the history table."""
        from ..records.history import TaskEntry

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
        blocking = self.blocking(wait_override(args))
        views = [self._view(job, deferred=blocking).open() for job in jobs]
        if blocking:
            self._block_on(views)

    def _cmd_wait(self, rest: str) -> None:
        parser = self._parser("wait")
        parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up after SECONDS")
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
                self._say("The panel is not available in this installation "
                          "(imagen4_jupyter.notebook.panel is missing).", "error")
                return
            raise
        close_panels()  # an older panel would stay subscribed to the session (and keep its thread) for ever
        panel = Panel(session=self.session)
        _panels.append(panel)
        display(panel)


    def _cmd_batch(self, rest: str) -> None:
        source, options = _split_source(rest)
        parser = self._parser("batch")
        parser.add_argument("-n", "--num-images", metavar="N", help="images per prompt (default: num_images)")
        parser.add_argument("-a", "--aspect-ratio", metavar="RATIO", help="default: aspect_ratio")
        parser.add_argument("-s", "--seed", metavar="SEED", help="one seed for every item without its own")
        parser.add_argument("--negative", metavar="TEXT", help="a negative prompt for every item without its own")
        parser.add_argument("-c", "--concurrency", type=int, default=4, help="tasks in flight at once (4)")
        parser.add_argument("--force", action="store_true", help="new tasks even for requests that succeeded")
        parser.add_argument("-o", "--out", metavar="NAME", help="bind the BatchResult to NAME at once")
        parser.add_argument("--wait", action="store_true", help="block until every item has finished")
        parser.add_argument("--no-wait", action="store_true", help="return at once; the table appears when done")
        args = parse_line(parser, options)
        check_wait_out(args)
        if args.concurrency < 1:
            raise UsageError("-c/--concurrency must be 1 or more.")
        items, label = batch_source(source, self.shell.user_ns)
        defaults = self.request_defaults(args)
        from ..research.batch import generate_many

        try:
            result = generate_many(items, session=self.session, reuse=self.reuse, concurrency=args.concurrency,
                                   force=args.force, wait=False, **defaults)
        except E.InvalidRequestError as err:
            raise UsageError(f"{label}: {err}") from None
        if args.out:
            self.shell.user_ns[args.out] = result
        if not result.items:
            self._say(f"{label} has no items; nothing sent.")
            return
        if self.blocking(wait_override(args)):
            self._wait_batch(result)
            self._show_batch(result)
            return
        handle = display(C.message_bundle(f"batch of {len(result)}: the table appears here when every item has "
                                          "finished"), raw=True, display_id=True) if self.rich() else None

        def finished() -> None:
            result.wait()
            self._show_batch(result, handle)

        threading.Thread(target=finished, name="imagen4-batch-table", daemon=True).start()

    def _wait_batch(self, result: Any) -> None:
        """Block the kernel thread until the batch has finished and the history recorded every outcome."""
        try:
            result.wait()
        except KeyboardInterrupt:
            result.stop("not sent: interrupted")
            self._say("Interrupted: nothing more is sent; running tasks continue in the background "
                      "(running the same batch again resumes it).")
            return
        jobs = self.session.jobs
        for item in result.items:  # reuse right after works (see _block_on)
            if item.job is not None and jobs.get(item.job.task_id) is item.job:
                self._recorded(item.job.task_id).wait(10)

    def _show_batch(self, result: Any, handle: Any = None) -> None:
        if not self.rich():
            print(f"[imagen4] batch: {result.summary()}", flush=True)
            base = self.output_base()
            for row in result.rows:
                paths = "  ".join(C.shown_path(p, base) for p in row["images"])
                print(f"  {row['index']}  {row['state']}  {row['task_id'] or '-'}  {paths or row['error'] or ''}",
                      flush=True)
            return
        if handle is not None:
            handle.update(result)
        else:
            display(result)


def _split_source(rest: str) -> tuple[str, str]:
    """`SOURCE options...`: the source as written up to the first space outside quotes and brackets, so that
    df['my column'] stays whole (shell quoting would make it df[my column]); a source quoted as a whole (a
    file name with spaces) is unquoted."""
    rest = rest.strip()
    if not rest or rest.startswith("-"):
        raise UsageError("%imagen4 batch needs a source first: a list variable (prompts), a CSV file "
                         "(prompts.csv) or a DataFrame column (df['prompt'] or df.prompt).")
    quote, depth, end = "", 0, len(rest)
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch.isspace() and depth <= 0:
            end = i
            break
    if quote:
        raise UsageError("Could not read the source: a quote is not closed.")
    source, options = rest[:end], rest[end:]
    if len(source) >= 2 and source[0] in "'\"" and source[-1] == source[0]:
        source = source[1:-1]
    return source, options


def _count_rows(path: Any) -> int:
    import csv
    import json

    with open(path, newline="", encoding="utf-8") as fh:
        if str(path).lower().endswith(".json"):
            return len(json.load(fh))
        return sum(1 for _ in csv.DictReader(fh))


def wait_override(args: Any) -> str | None:
    """--wait / --no-wait as a wait mode for `blocking()` (None: the trait decides)."""
    return "always" if args.wait else "never" if args.no_wait else None


def check_wait_out(args: Any) -> None:
    """The checks every command with --wait/--no-wait and -o/--out shares."""
    import keyword

    if args.wait and args.no_wait:
        raise UsageError("Use either --wait or --no-wait, not both.")
    if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
        raise UsageError(f"-o/--out needs a Python variable name, not {args.out!r}.")


_panels: list = []  # the panels `%imagen4 panel` opened in this kernel (module-level: outlives a reload)


def close_panels() -> None:
    """Close the panels `%imagen4 panel` opened: they stop listening to the session; their outputs go blank."""
    while _panels:
        panel = _panels.pop()
        try:
            panel.close()
        except Exception:  # a half-built or already closed panel: nothing left to release
            pass
