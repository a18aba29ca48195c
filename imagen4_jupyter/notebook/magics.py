"""`%%imagen4` (a prompt cell) and `%imagen4 <subcommand>`, configured by `%config Imagen4Magics.<trait>`.

The magic holds no protocol or history logic: it parses the cell, builds a `GenerationRequest`, and hands it
to the kernel's `Session`. Outputs are created while the cell runs (`display(..., display_id=True)`) and
updated in place from the poller thread, so images land in the cell that asked for them. Headless runs
(nbclient, papermill, nbconvert: `allow_stdin` is false) block until the images are there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Bool, Dict, Float, Int, TraitError, Unicode, observe, validate

from ..api import errors as E
from ..api.models import ASPECT_RATIOS, MAX_IMAGES, model_spec
from ..records.open_tasks import open_task_ids
from ..records.policies import REUSE_POLICIES
from .options import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_MODEL,
    DEFAULT_NUM_IMAGES,
    DEFAULT_TIMEOUT,
    DEFAULTS_HELP,
    EMBED_MODES,
    SUBCOMMANDS,
    CellError,
    Choice,
    add_cell_flags,
    lazy_arguments,
    parse_words,
    shared_flags,
    split_body,
    split_line,
    wait_override,
)
from .service import apply_callbacks, ask_key, load_line, raise_no_key, refuse_webhook_key

if TYPE_CHECKING:  # these load with the first cell or subcommand, not with %load_ext (tests/test_load_speed.py)
    from ..api.job import Job
    from ..api.request import GenerationRequest
    from ..records.session import Session
    from .cellview import LiveViews
    from .subcommands import Subcommands

__all__ = ["SUBCOMMANDS", "CellError", "Imagen4Magics", "load", "split_body", "unload"]

WAIT_MODES = ("auto", "always", "never")
CELL_FLAGS = shared_flags(add_cell_flags)  # the flags of %%imagen4 (their argparse actions once it is built)


def help_epilog() -> str:
    """The end of `%%imagen4?`: the subcommands (their parser is built here, on first use) and the defaults."""
    from .subcommands import help_text

    return help_text() + DEFAULTS_HELP


@magics_class
class Imagen4Magics(Magics):
    """Google Imagen 4 in Jupyter: `%%imagen4` cells and `%imagen4 <subcommand>`."""

    model = Unicode(DEFAULT_MODEL, help=(
        "Default model: standard (google/imagen4), fast (google/imagen4-fast) or ultra (google/imagen4-ultra; "
        "one image per task); a full name works too (-m overrides).")).tag(config=True)
    aspect_ratio = Choice(("", *ASPECT_RATIOS), DEFAULT_ASPECT_RATIO, help=(
        "Default aspect ratio: one of 1:1 16:9 9:16 3:4 4:3, or '' (unset) for the model's own default: 16:9 "
        "for fast, 1:1 for standard and ultra (-a overrides).")).tag(config=True)
    num_images = Int(DEFAULT_NUM_IMAGES, min=1, max=MAX_IMAGES, help=(
        "Default number of images per prompt, 1-4 (-n overrides).")).tag(config=True)
    wait = Choice(WAIT_MODES, "auto", help=(
        "Whether a cell blocks until its images are there: 'auto' blocks in headless runs (nbclient, "
        "papermill, nbconvert --execute) and terminals, and returns at once in an interactive notebook; "
        "'always' / 'never' force it (--wait / --no-wait override per cell).")).tag(config=True)
    timeout = Float(DEFAULT_TIMEOUT, help=(
        "Seconds to follow a task before giving up on it (the service may still finish it: %imagen4 resume "
        "picks it up). A blocking cell waits at most this long.")).tag(config=True)
    poll_interval = Float(0.0, min=0.0, help=(
        "Seconds between status checks; 0 learns how long generation takes (from this notebook's history) "
        "and checks densely only around the likely end, following the provider's advised schedule (2-3 s at "
        "first, then sparser) until it has seen three tasks.")).tag(config=True)
    history_folder = Unicode("", help=(
        "Folder for the history log and images; empty: a .imagen4/ folder beside the notebook (or the "
        "working directory when the notebook cannot be found).")).tag(config=True)
    notebook = Unicode("", help=(
        "The notebook's path, when it cannot be detected (JupyterLab's JPY_SESSION_NAME and VS Code are); "
        "decides which history file is used.")).tag(config=True)
    embed = Choice(EMBED_MODES, "preview", help=(
        "How images go into the notebook: 'preview' a bounded JPEG/PNG (full resolution stays on disk), "
        "'full' the original bytes, 'none' file paths only (--embed overrides).")).tag(config=True)
    preview_size = Int(768, min=16, help="Longest side in pixels of embedded previews (embed='preview').").tag(
        config=True)
    reuse = Choice(REUSE_POLICIES, "seeded", help=(
        "When a cell whose exact request succeeded before shows the stored images instead of creating a task: "
        "'seeded' only for requests with a seed, 'always' for any identical request, 'never'. --force "
        "always creates a new task.")).tag(config=True)
    display_mode = Choice(("auto", "rich", "text"), "auto", help=(
        "'rich' notebook outputs (live card, inline images), 'text' status lines and file paths (terminals); "
        "'auto' picks rich inside a Jupyter kernel.")).tag(config=True)
    refresh_interval = Float(1.0, min=0.0, help=(
        "Seconds between elapsed-time refreshes of live status cards; 0 refreshes only when the state "
        "changes.")).tag(config=True)
    budget = Float(None, allow_none=True, min=0.0, help=(
        "Credits this kernel may spend on new tasks (None: no limit). A request whose estimated cost would pass "
        "what is left is refused before it is sent; reused results cost nothing. %imagen4 spend shows the "
        "notebook's spend.")).tag(config=True)
    prices = Dict(value_trait=Float(min=0.0), help=(
        "Credits a task costs per model until measured from the balance, e.g. {'ultra': 10} (short or full "
        "names); the others keep the list prices (4 fast, 6 standard, 12 ultra).")).tag(config=True)
    callback_listen = Unicode("", help=(
        "host:port of a receiver for the service's callbacks, e.g. 127.0.0.1:8765 behind a tunnel or reverse "
        "proxy (opt in, for hosts the service can reach; '' off; no host means 127.0.0.1; 0.0.0.0 opens it to "
        "every network): each callback is a hint to check its task at once.")).tag(config=True)
    callback_url = Unicode("", help=(
        "The public URL the service reaches that receiver at, e.g. https://my.host/imagen4 ('' the listen "
        "address).")).tag(config=True)
    webhook_key = Unicode("", help=(
        "Not set here (IPython saves %config lines): the account's webhook HMAC key comes from "
        "APIKLEY_WEBHOOK_KEY, a .env, or %imagen4 webhook-key (a masked prompt). Unsigned or forged callbacks "
        "are then refused.")).tag(config=True)
    track_credits = Bool(False, help=(
        "Read the account balance before and after each new task and record both in the history "
        "(two extra requests per task; %imagen4 credits always records what it reads).")).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        # Before traitlets' __init__: it applies the config (`c.Imagen4Magics.poll_interval = ...`), which
        # runs the trait observers, and they read these.
        self._session: Session | None = None
        self._building = True  # a config file's webhook_key is ignored with a line, not an error that stops loading
        self.key_offered = False  # an interactive kernel's first cell without a key offers the masked prompt once
        self.made_views: LiveViews | None = None  # the cells' live outputs, made on first use (`views`)
        self.made_commands: Subcommands | None = None  # %imagen4 <subcommand> (`commands`)
        super().__init__(shell=shell, **kwargs)
        self._building = False

    @property
    def views(self) -> LiveViews:
        if self.made_views is None:
            from .cellview import LiveViews

            self.made_views = LiveViews(self)
        return self.made_views

    @property
    def commands(self) -> Subcommands:
        if self.made_commands is None:
            from .subcommands import Subcommands

            self.made_commands = Subcommands(self, self.views)
        return self.made_commands

    # -- traits -------------------------------------------------------------------------------
    @validate("model")
    def _check_model(self, proposal: Any) -> str:
        try:
            return model_spec(proposal["value"]).short  # 'google/imagen4-ultra' and 'Ultra' are kept as 'ultra'
        except E.InvalidRequestError as err:
            raise TraitError(f"model: {err}") from None

    @validate("prices")
    def _check_prices(self, proposal: Any) -> dict:
        from ..api.spend import PriceBook

        try:
            PriceBook(proposal["value"])  # every name a model, every price a number of credits
        except E.InvalidRequestError as err:
            raise TraitError(f"prices: {err}") from None
        return proposal["value"]

    @validate("timeout")
    def _check_timeout(self, proposal: Any) -> float:  # Float(min=) cannot say "more than 0"
        if not proposal["value"] > 0:
            raise TraitError("timeout must be a positive number of seconds.")
        return proposal["value"]

    @validate("webhook_key")
    def _refuse_webhook_key(self, proposal: Any) -> str:
        return refuse_webhook_key(proposal["value"], building=self._building)

    @observe("callback_listen", "callback_url")
    def _callbacks_changed(self, change: Any) -> None:  # opting in loads the session now, to say where it listens
        if self.shell is None:  # still being built (config applied in __init__): the session applies it later
            return
        self.refresh_callbacks()

    def refresh_callbacks(self) -> None:
        """Make the session's callback receiver match the traits and the webhook key in force (one receiver)."""
        session = self.session  # made first: a new session applies the traits itself, and this changes nothing
        for line in apply_callbacks(session, self.callback_listen, self.callback_url):
            print(line)

    @observe("poll_interval", "timeout")
    def _schedule_changed(self, change: Any) -> None:
        if self._session is not None:
            self._session.configure_client(schedule=self.schedule())

    @observe("budget", "prices")
    def _spend_changed(self, change: Any) -> None:
        if self._session is not None:
            self._session.spending.configure(self.budget, self.prices)

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
        from ..api.schedules import schedule_for

        return schedule_for(self.poll_interval, self.timeout)

    # -- the session --------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        """The kernel's session: the current one if it keeps the same history file, else a new one."""
        if self._session is None:
            from ..records.location import find_notebook, history_path
            from ..records.session import Session, current_session, set_session

            user_ns = self.shell.user_ns if self.shell else None
            nb, _ = find_notebook(user_ns, self.notebook or None)
            current = current_session()
            if current is not None and current.history.path == history_path(nb, self.history_folder or None):
                current.reuse = self.reuse  # a reloaded extension or a panel opened first: keep its jobs
                current.configure_client(schedule=self.schedule())
                self._session = current
            else:
                self._session = Session(user_ns=user_ns, notebook=self.notebook or None,
                                        history_folder=self.history_folder or None, reuse=self.reuse,
                                        client_options={"schedule": self.schedule()})
                set_session(self._session)
            self._session.spending.configure(self.budget, self.prices)
            if self.callback_listen:  # configured before the session existed
                self._callbacks_changed(None)
        return self._session

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

    # -- the magic ------------------------------------------------------------------------------
    @no_var_expand
    @lazy_arguments("%imagen4", help_epilog, CELL_FLAGS)  # the usage line reads %%imagen4; built on first use
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
        """
        if self._session is not None:  # each cell reads the key and address in force once (Session.begin)
            self._session.begin()
        if cell is None:
            return self.commands.run(line)
        return self._generate(line, cell)

    # -- %%imagen4 -------------------------------------------------------------------------------
    def build_request(self, line: str, cell: str) -> tuple[GenerationRequest, Any]:
        """Parse flags and body into a validated request; every problem is a UsageError (nothing sent)."""
        from .cell_request import cell_request

        args = parse_words(self.imagen4.parser, split_line(line), known=CELL_FLAGS.option_strings())
        return cell_request(self, args, cell), args

    def request_defaults(self, args: Any) -> dict[str, Any]:
        """The request fields of -m, -a, -n, -s and --negative ({name} replaced from the user's variables), the
        traits where a flag is absent: a cell's request, or the defaults of `%imagen4 batch` items."""
        from .cell_request import request_fields

        return request_fields(self, args)

    def _generate(self, line: str, cell: str) -> None:
        assert self.shell is not None  # a cell runs in the shell the magics were registered with
        request, args = self.build_request(line, cell)
        blocking = self.blocking(wait_override(args))
        embed = args.embed or self.embed
        session = self.session
        if args.force or session.find_reusable(request, self.reuse) is None:
            self.require_key()  # a stored result needs none
        extra = self._credits_event("credits_before") if self.track_credits else {}
        followed = None if args.force else session.in_flight(request, self.reuse)
        try:
            job = session.submit(request, force=args.force, reuse=self.reuse, source="magic",
                                 cell=self.shell.execution_count, extra=extra)
        except E.InvalidRequestError as err:
            raise UsageError(str(err)) from None
        except E.Imagen4Error as err:
            raise CellError(err) from err
        if args.out:
            self.shell.user_ns[args.out] = job
        if job.reused:
            self.views.show_finished(job, embed, note="reused")
            return None
        if self.track_credits:
            job.add_done_callback(self._record_credits_after)
        note = "" if followed is not job else (  # a second Shift+Enter while the first request is in flight
            "Follows the identical request already in flight (an earlier run of this cell or another): no new "
            "task, no new charge; --force makes a new one.")
        try:
            view = self.views.open(job, embed=embed, deferred=blocking, note=note)
            if blocking:
                self.views.block_on([view], raises=True)
        except KeyboardInterrupt:  # before the cell's wait began: the same one line as an interrupt during it
            if self.views.withdraw([job]):
                self.views.say("Interrupted: the request was withdrawn before it was sent; nothing will be sent.")
            else:
                self.views.say_unfinished([job], "Interrupted")
            return None
        if blocking and job.done() and job.error is not None and not isinstance(job.error, E.CancelledError):
            raise CellError(job.error) from job.error  # (a withdrawn request was said by block_on)
        return None

    def require_key(self) -> None:
        """Raise the one-line no-key error (every way to give one) unless the session's client has a key. In an
        interactive kernel the first cell that needs a key offers the masked prompt once (`%imagen4 key`)."""
        try:
            if self.session.client.has_key:
                return
            if not self.key_offered and not self.headless():
                self.key_offered = True
                if ask_key():
                    self.session.begin()  # the typed key is in force from now on
                    if self.session.client.has_key:
                        return
        except E.Imagen4Error as err:  # a bad base URL, say: one line, like every other failure of a cell
            raise CellError(err) from err
        raise_no_key()

    def _credits_event(self, key: str) -> dict:
        try:
            return {key: self.session.client.credits()}
        except E.Imagen4Error:
            return {}

    def _record_credits_after(self, job: Job) -> None:
        if value := self._credits_event("credits"):
            self.session.history.append({"event": "credits_after", "task_id": job.task_id, **value})


_loaded: Imagen4Magics | None = None


def load(ipython: Any) -> Imagen4Magics:
    """`%load_ext imagen4_jupyter`: register the magics, open the history, say where it is."""
    global _loaded
    magics = Imagen4Magics(shell=ipython)
    ipython.register_magics(magics)
    _loaded = magics
    line, path = load_line(ipython.user_ns if ipython else None, magics.notebook or None,
                           magics.history_folder or None)
    print(line)
    if unfinished := open_task_ids(path):  # a small read: the history is parsed on first use
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
        if magics.made_views is not None:  # none made (no cell ran): nothing to stop
            magics.made_views.stop()
        if magics in getattr(ipython, "configurables", []):
            ipython.configurables.remove(magics)
