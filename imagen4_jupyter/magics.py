"""`%%imagen4` (a prompt cell) and `%imagen4 <subcommand>`, configured by `%config Imagen4Magics.<trait>`.

The magic holds no protocol or history logic: it parses the cell, builds a `GenerationRequest`, and hands it
to the kernel's `Session`. Outputs are created while the cell runs (`display(..., display_id=True)`) and
updated in place from the poller thread, so images land in the cell that asked for them. Headless runs
(nbclient, papermill, nbconvert: `allow_stdin` is false) block until the images are there.
"""
from __future__ import annotations

import keyword
import sys
import threading
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import MagicArgumentParser, argument, magic_arguments
from IPython.display import display
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, observe, validate

from . import display as D
from . import errors as E
from .request import ASPECT_RATIOS, MAX_IMAGES, GenerationRequest, interpolate
from .session import REUSE_POLICIES, Session, set_session
from .task import Job

SUBCOMMANDS = ("history", "show", "status", "resume", "wait", "credits", "panel")
WAIT_MODES = ("auto", "always", "never")


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


def split_body(cell: str) -> tuple[str, str | None]:
    """The prompt above a line holding only `---`, the negative prompt below it (None without such a line)."""
    lines = cell.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "---":
            return "\n".join(lines[:i]).strip(), "\n".join(lines[i + 1:]).strip()
    return cell.strip(), None


class CellView:
    """The outputs of one task in the cell that showed it: a status card and one slot per image.

    Created on the kernel thread; updated from the poller thread by display id. When the cell blocks
    (`deferred`), the final rendering is left to the kernel thread so it lands before the cell ends.
    """

    def __init__(self, owner: "Imagen4Magics", job: Job, *, rich: bool, embed: str, preview_size: int,
                 deferred: bool):
        self.owner, self.job, self.rich = owner, job, rich
        self.embed, self.preview_size = embed, preview_size
        self.deferred = deferred
        self.finalized = False
        self.rendered = threading.Event()
        self.card: Any = None
        self.slots: list[Any] = []
        self._lock = threading.RLock()
        self._last_line = ""
        self._last_card: dict | None = None

    # -- kernel thread ------------------------------------------------------------------------
    def open(self) -> "CellView":
        expected = self.job.request.num_images if self.job.request else 1
        if self.rich:
            self._last_card = D.card_bundle(self.job)
            self.card = display(self._last_card, raw=True, display_id=True)
            self.slots = [display(D.slot_bundle(), raw=True, display_id=True) for _ in range(expected)]
        else:
            self._print_state()
        self.owner._track_view(self)
        self.job.on_change(self._changed)
        self._changed(self.job)  # it may have moved on before we subscribed
        return self

    # -- poller thread (and ticker) ------------------------------------------------------------
    def _changed(self, job: Job) -> None:
        with self._lock:
            if self.finalized:
                return
            if job.done():
                if not self.deferred:
                    self.finalize()
                return
            self.refresh()

    def refresh(self) -> None:
        """Show the current state and elapsed time (live cards only)."""
        with self._lock:
            if self.finalized:
                return
            if self.rich:
                bundle = D.card_bundle(self.job)
                if bundle != self._last_card:
                    self._last_card = bundle
                    self.card.update(bundle, raw=True)
            else:
                self._print_state()

    def finalize(self) -> None:
        """Turn the card into the final state and fill the image slots (once)."""
        with self._lock:
            if self.finalized:
                return
            self.finalized = True
            try:
                self._render_rich() if self.rich else self._render_text()
            finally:
                self.rendered.set()
                self.owner._untrack_view(self)

    def _render_rich(self) -> None:
        job = self.job
        images = job.images
        note = ""
        if job.error is None and len(images) > len(self.slots):  # the service sent more than asked for
            note = f"{len(images) - len(self.slots)} more image(s): %imagen4 show {job.task_id}"
        problems = []
        if job.error is None:
            for slot, image in zip(self.slots, images, strict=False):
                try:
                    data, meta = D.image_output(job, image, self.embed, self.preview_size)
                except Exception as exc:  # a damaged file must not hide the others
                    problems.append(f"image {image.index + 1} could not be shown ({exc}); file: {image.path}")
                    continue
                slot.update(data, raw=True, metadata=meta)
        for slot in self.slots[len(images) if job.error is None else 0:]:
            slot.update({"text/plain": ""}, raw=True)
        self.card.update(D.card_bundle(job, note="; ".join(problems + ([note] if note else []))), raw=True)

    def _print_state(self) -> None:
        line = f"[imagen4] {self.job.task_id}: {self.job.status}"
        if line != self._last_line:
            self._last_line = line
            print(line, flush=True)

    def _render_text(self) -> None:
        job = self.job
        if job.error is not None:
            print(f"[imagen4] {job.error.short() if isinstance(job.error, E.Imagen4Error) else job.error}",
                  file=sys.stderr, flush=True)
            return
        print(f"[imagen4] {job.task_id}: done in {job.elapsed:.1f} s; saved:", flush=True)
        for image in job.images:
            print(f"  {image.path}  ({image.width}×{image.height})", flush=True)


class _Ticker:
    """One daemon thread that refreshes the elapsed time of live cards; it stops when none is left."""

    def __init__(self, owner: "Imagen4Magics"):
        self.owner = owner
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def ensure(self) -> None:
        if self.owner.refresh_interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="imagen4-ticker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(max(0.1, self.owner.refresh_interval)):
            views = self.owner._live_views()
            if not views:
                return
            for view in views:
                if view.rich:
                    try:
                        view.refresh()
                    except Exception:  # a display problem must not end the ticker
                        pass


@magics_class
class Imagen4Magics(Magics):
    """Google Imagen 4 in Jupyter: `%%imagen4` cells and `%imagen4 <subcommand>`."""

    aspect_ratio = Unicode("1:1", help="Default aspect ratio: one of 1:1 16:9 9:16 3:4 4:3 (-a overrides).").tag(
        config=True)
    num_images = Int(1, help="Default number of images per prompt, 1-4 (-n overrides).").tag(config=True)
    wait = Enum(WAIT_MODES, "auto", help=(
        "Whether a cell blocks until its images are there: 'auto' blocks in headless runs (nbclient, "
        "papermill, nbconvert --execute) and terminals, and returns at once in an interactive notebook; "
        "'always' / 'never' force it (--wait / --no-wait override per cell).")).tag(config=True)
    timeout = Float(900.0, help=(
        "Seconds to follow a task before giving up on it (the service may still finish it: %imagen4 resume "
        "picks it up). A blocking cell waits at most this long.")).tag(config=True)
    poll_interval = Float(0.0, help=(
        "Seconds between status checks; 0 learns how long generation takes (from this notebook's history) "
        "and checks densely only around the likely end, following the provider's advised schedule (2-3 s at "
        "first, then sparser) until it has seen three tasks.")).tag(config=True)
    history_folder = Unicode("", help=(
        "Folder for the history log and images; empty: a .imagen4/ folder beside the notebook (or the "
        "working directory when the notebook cannot be found).")).tag(config=True)
    notebook = Unicode("", help=(
        "The notebook's path, when it cannot be detected (JupyterLab's JPY_SESSION_NAME and VS Code are); "
        "decides which history file is used.")).tag(config=True)
    embed = Enum(D.EMBED_MODES, "preview", help=(
        "How images go into the notebook: 'preview' a bounded JPEG/PNG (full resolution stays on disk), "
        "'full' the original bytes, 'none' file paths only (--embed overrides).")).tag(config=True)
    preview_size = Int(768, help="Longest side in pixels of embedded previews (embed='preview').").tag(config=True)
    reuse = Enum(REUSE_POLICIES, "seeded", help=(
        "When a cell whose exact request succeeded before shows the stored images instead of creating a task: "
        "'seeded' only for requests with a seed, 'always' for any identical request, 'never'. --force "
        "always creates a new task.")).tag(config=True)
    display_mode = Enum(("auto", "rich", "text"), "auto", help=(
        "'rich' notebook outputs (live card, inline images), 'text' status lines and file paths (terminals); "
        "'auto' picks rich inside a Jupyter kernel.")).tag(config=True)
    refresh_interval = Float(1.0, help=(
        "Seconds between elapsed-time refreshes of live status cards; 0 refreshes only when the state "
        "changes.")).tag(config=True)
    track_credits = Bool(False, help=(
        "Read the account balance before and after each new task and record both in the history "
        "(two extra requests per task; %imagen4 credits always records what it reads).")).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self._session: Session | None = None
        self._views: set[CellView] = set()
        self._views_lock = threading.Lock()
        self._ticker = _Ticker(self)
        self._outcomes: dict[str, threading.Event] = {}  # set once the session recorded a task's end

    # -- traits -------------------------------------------------------------------------------
    @validate("aspect_ratio")
    def _check_ratio(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value not in ASPECT_RATIOS:
            raise TraitError(f"aspect_ratio {value!r} is not supported; use one of {', '.join(ASPECT_RATIOS)}.")
        return value

    @validate("num_images")
    def _check_num(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= MAX_IMAGES:
            raise TraitError(f"num_images must be from 1 to {MAX_IMAGES}, not {proposal['value']}.")
        return proposal["value"]

    @validate("timeout")
    def _check_timeout(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError("timeout must be a positive number of seconds.")
        return proposal["value"]

    @validate("poll_interval", "refresh_interval")
    def _check_nonneg(self, proposal: Any) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more seconds.")
        return proposal["value"]

    @validate("preview_size")
    def _check_preview(self, proposal: Any) -> int:
        if proposal["value"] < 16:
            raise TraitError("preview_size must be at least 16 pixels.")
        return proposal["value"]

    @observe("poll_interval", "timeout")
    def _schedule_changed(self, change: Any) -> None:
        if self._session is not None:
            self._session.configure_client(schedule=self.schedule())

    @observe("reuse")
    def _reuse_changed(self, change: Any) -> None:
        if self._session is not None:
            self._session.reuse = change["new"]

    @observe("notebook", "history_folder")
    def _place_changed(self, change: Any) -> None:
        if self._session is not None:
            self._session.relocate(notebook=self.notebook or None, history_folder=self.history_folder or None,
                                   user_ns=self.shell.user_ns if self.shell else None)
            print(self._session.where())

    def schedule(self) -> Any:
        """The polling schedule the traits describe."""
        import dataclasses

        from .poller import PollSchedule
        from .schedule import SmartSchedule

        if self.poll_interval > 0:
            return PollSchedule.fixed(self.poll_interval, max_wait=self.timeout)
        return SmartSchedule(fallback=dataclasses.replace(PollSchedule(), max_wait=self.timeout))

    # -- the session --------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        """The kernel's session: the current one if it keeps the same history file, else a new one."""
        if self._session is None:
            from . import session as S
            from .history import find_notebook, history_path

            user_ns = self.shell.user_ns if self.shell else None
            nb, _ = find_notebook(user_ns, self.notebook or None)
            current = S._current
            if current is not None and current.history.path == history_path(nb, self.history_folder or None):
                current.reuse = self.reuse  # a reloaded extension or a panel opened first: keep its jobs
                current.configure_client(schedule=self.schedule())
                self._session = current
            else:
                self._session = Session(user_ns=user_ns, notebook=self.notebook or None,
                                        history_folder=self.history_folder or None, reuse=self.reuse,
                                        client_options={"schedule": self.schedule()})
                set_session(self._session)
            self._session.subscribe(self._session_changed)
        return self._session

    def _session_changed(self, job: Job) -> None:
        """The session calls this after it wrote a job's change to the history."""
        if job.done():
            self._recorded(job.task_id).set()

    def _recorded(self, task_id: str) -> threading.Event:
        with self._views_lock:
            return self._outcomes.setdefault(task_id, threading.Event())

    # -- where am I running -------------------------------------------------------------------
    def _kernel_parent(self) -> dict | None:
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return None
        try:
            return kernel.get_parent("shell") or {}
        except Exception:
            return {}

    def rich(self) -> bool:
        if self.display_mode != "auto":
            return self.display_mode == "rich"
        return getattr(self.shell, "kernel", None) is not None

    def headless(self) -> bool:
        """True when nobody watches live updates: nbclient-style runs (allow_stdin false) or no kernel."""
        parent = self._kernel_parent()
        if parent is None:
            return True
        return (parent.get("content") or {}).get("allow_stdin") is False

    def blocking(self, override: str | None = None) -> bool:
        mode = override or self.wait
        return mode == "always" or (mode == "auto" and self.headless())

    # -- views ---------------------------------------------------------------------------------
    def _track_view(self, view: CellView) -> None:
        with self._views_lock:
            self._views.add(view)
        self._ticker.ensure()

    def _untrack_view(self, view: CellView) -> None:
        with self._views_lock:
            self._views.discard(view)

    def _live_views(self) -> list[CellView]:
        with self._views_lock:
            return [v for v in self._views if not v.rendered.is_set()]  # finalizing ones too

    def _view(self, job: Job, *, embed: str | None = None, deferred: bool = False) -> CellView:
        return CellView(self, job, rich=self.rich(), embed=embed or self.embed, preview_size=self.preview_size,
                        deferred=deferred)

    def _block_on(self, views: list[CellView]) -> list[Job]:
        """Wait on the kernel thread until the views' jobs are done, then render them here."""
        limit = self.timeout + 60.0
        deadline = time.monotonic() + limit
        interrupted = False
        try:
            for view in views:
                view.job.exception(max(0.0, deadline - time.monotonic()))
                if view.job.done():  # the session records the outcome just after: let it, first
                    self._recorded(view.job.task_id).wait(10)
        except KeyboardInterrupt:
            interrupted = True
        unfinished = []
        for view in views:
            with view._lock:
                view.deferred = False
                if view.job.done():
                    view.finalize()
                else:
                    unfinished.append(view.job)
        if unfinished:
            why = "Interrupted" if interrupted else f"Still running after {limit:g} s"
            ids = ", ".join(j.task_id for j in unfinished)
            self._say(f"{why}: stopped waiting for {ids}. The task continues in the background and its "
                      "images will appear here; %imagen4 wait blocks again.")
        return [v.job for v in views]

    def _say(self, text: str, kind: str = "info") -> None:
        if self.rich():
            display(D.message_bundle(text, kind), raw=True)
        else:
            print(f"[imagen4] {text}", file=sys.stderr if kind == "error" else sys.stdout, flush=True)

    # -- the magic ------------------------------------------------------------------------------
    @no_var_expand
    @magic_arguments(name="%imagen4")  # the usage line then reads %%imagen4
    @argument("-n", "--num-images", metavar="N", help="How many images, 1-4 (default: Imagen4Magics.num_images).")
    @argument("-a", "--aspect-ratio", metavar="RATIO",
              help="One of 1:1 16:9 9:16 3:4 4:3 (default: Imagen4Magics.aspect_ratio).")
    @argument("-s", "--seed", metavar="SEED", help=(
        "Seed (text or a number). A seeded request that succeeded before is shown again from the history "
        "without a new task (see Imagen4Magics.reuse)."))
    @argument("--negative", metavar="TEXT", help="Negative prompt (or write it below a line holding only ---).")
    @argument("--callback-url", metavar="URL", help="An http(s) URL the service POSTs the finished task to.")
    @argument("--wait", action="store_true", help="Block until the images are there (default in headless runs).")
    @argument("--no-wait", action="store_true",
              help="Return at once; the card and images update in place (default in interactive notebooks).")
    @argument("--force", action="store_true", help="Create a new task even if this exact request succeeded before.")
    @argument("-o", "--out", metavar="NAME",
              help="Bind the job handle to NAME at once (NAME.task_id, NAME.wait(), NAME.images).")
    @argument("--embed", choices=D.EMBED_MODES,
              help="preview (bounded, default), full (original bytes) or none (file paths only).")
    @line_cell_magic
    def imagen4(self, line: str, cell: str | None = None) -> None:
        """Generate images with Google Imagen 4 (Apikley's task API).

        Cell magic -- the cell body is the prompt; a line holding only --- separates the negative prompt
        below it. {name} and {name.attr} are replaced from your variables, {{ and }} are literal braces,
        and any other brace (JSON, code) is left alone (a JSON object ending in }} needs }}}}):

            %%imagen4 -n 2 -a 16:9 -s 42 -o job
            A watercolour fox in {season}, style {{"soft": true}}
            ---
            blurry, text

        The cell returns at once in an interactive notebook with a live status card; the images replace
        placeholders in this cell when they are ready. Headless runs block so the saved notebook has them.
        Images and an append-only history (.imagen4/ beside the notebook) are kept on disk; re-running a
        seeded request that succeeded before shows the stored images without a new task.

        Line magic -- %imagen4 <subcommand>:
          history [--limit N] [--search TEXT]   earlier tasks: time, prompt, parameters, state, id, thumbnails
          show TASK_ID                          a task's stored images (or its live status)
          status TASK_ID                        ask the service about a task now
          resume [--wait | --no-wait]           follow tasks left unfinished (e.g. by a kernel restart)
          wait [--timeout SECONDS]              block until every pending task has finished
          credits                               the account's remaining credits
          panel                                 the interactive widget panel

        Defaults: %config Imagen4Magics (aspect_ratio, num_images, wait, timeout, poll_interval,
        history_folder, notebook, embed, preview_size, reuse, display_mode, refresh_interval,
        track_credits). The API key comes from APIKLEY_API_KEY and is never stored or shown.
        """
        if cell is None:
            return self._subcommand(line)
        return self._generate(line, cell)

    # -- %%imagen4 -------------------------------------------------------------------------------
    def build_request(self, line: str, cell: str) -> tuple[GenerationRequest, Any]:
        """Parse flags and body into a validated request; every problem is a UsageError (nothing sent)."""
        args = parse_line(self.imagen4.parser, line)
        if args.wait and args.no_wait:
            raise UsageError("Use either --wait or --no-wait, not both.")
        if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            raise UsageError(f"-o/--out needs a Python variable name, not {args.out!r}.")
        ns = self.shell.user_ns
        prompt, negative = split_body(cell)
        if negative is not None and args.negative is not None:
            raise UsageError("Give the negative prompt either below a --- line or with --negative, not both.")

        def interp(value: Any) -> Any:
            return interpolate(value, ns) if isinstance(value, str) else value

        try:
            request = GenerationRequest.create(
                interp(prompt),
                negative_prompt=interp(negative if negative is not None else args.negative),
                aspect_ratio=interp(args.aspect_ratio) if args.aspect_ratio is not None else self.aspect_ratio,
                num_images=interp(args.num_images) if args.num_images is not None else self.num_images,
                seed=interp(args.seed),
                callback_url=interp(args.callback_url))
        except E.InvalidRequestError as err:
            raise UsageError(str(err)) from None
        return request, args

    def _generate(self, line: str, cell: str) -> None:
        request, args = self.build_request(line, cell)
        blocking = self.blocking("always" if args.wait else "never" if args.no_wait else None)
        embed = args.embed or self.embed
        session = self.session
        extra = self._credits_event("credits_before") if self.track_credits else {}
        try:
            job = session.submit(request, force=args.force, reuse=self.reuse, source="magic",
                                 cell=self.shell.execution_count, extra=extra)
        except E.InvalidRequestError as err:
            raise UsageError(str(err)) from None
        except E.Imagen4Error as err:
            raise short_error(err) from None
        if args.out:
            self.shell.user_ns[args.out] = job
        if job.reused:
            self._show_finished(job, embed, note="reused")
            return None
        if self.track_credits:
            job.add_done_callback(self._record_credits_after)
        view = self._view(job, embed=embed, deferred=blocking).open()
        if blocking:
            self._block_on([view])
            if job.done() and job.error is not None:
                raise short_error(job.error) from None
        return None

    def _show_finished(self, job: Job, embed: str, note: str = "") -> None:
        """A finished job's card (or reuse line) and its images, displayed now (kernel thread)."""
        if not self.rich():
            if note == "reused":
                print(D.reused_bundle(job, job.created_at)["text/plain"], flush=True)
            view = self._view(job, embed=embed)
            view._render_text()
            return
        display(D.reused_bundle(job, job.created_at) if note == "reused" else D.card_bundle(job), raw=True)
        for image in job.images:
            data, meta = D.image_output(job, image, embed, self.preview_size)
            display(data, raw=True, metadata=meta)

    def _credits_event(self, key: str) -> dict:
        try:
            return {key: self.session.client.credits()}
        except E.Imagen4Error:
            return {}

    def _record_credits_after(self, job: Job) -> None:
        value = self._credits_event("credits")
        if value:
            self.session.history.append({"event": "credits_after", "task_id": job.task_id, **value})

    # -- %imagen4 <subcommand> -------------------------------------------------------------------
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
        try:
            from .panel import Panel
        except ModuleNotFoundError as err:
            if err.name and err.name.endswith("panel"):
                self._say("The panel is not available in this installation (imagen4_jupyter.panel is missing).",
                          "error")
                return
            raise
        display(Panel())


_loaded: Imagen4Magics | None = None


def load(ipython: Any) -> Imagen4Magics:
    """`%load_ext imagen4_jupyter`: register the magics, open the history, say where it is."""
    global _loaded
    magics = Imagen4Magics(shell=ipython)
    ipython.register_magics(magics)
    _loaded = magics
    session = magics.session
    print(session.where())
    unfinished = session.history.unfinished()
    if unfinished:
        print(f"{len(unfinished)} unfinished task(s) — run %imagen4 resume")
    return magics


def unload(ipython: Any) -> None:
    """Remove the magics; running tasks keep updating their cells."""
    global _loaded
    magics, _loaded = _loaded, None
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("imagen4", None)
    if magics is not None:
        magics._ticker.stop()
        if magics._session is not None:
            magics._session.unsubscribe(magics._session_changed)
        if magics in getattr(ipython, "configurables", []):
            ipython.configurables.remove(magics)
