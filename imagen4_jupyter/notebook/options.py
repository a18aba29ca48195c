"""What the magic's command lines share: the request flags of `%%imagen4` and `%imagen4 batch` (defined once,
added to both), parsing with shell quoting and "did you mean" hints, `CellError`, a failure shown as one
line in the notebook, and `lazy_arguments`: the magic's parser and help, built on first use (not at %load_ext).
"""
from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from IPython.core.error import UsageError
from traitlets import Enum, TraitError

from ..api import errors as E

# the defaults of the traits the request flags fall back to (Imagen4Magics declares its traits with these)
DEFAULT_NUM_IMAGES = 1
DEFAULT_ASPECT_RATIO = ""  # unset: the model's documented default (16:9 for fast, 1:1 for standard and ultra)
DEFAULT_MODEL = "standard"
DEFAULT_TIMEOUT = 900.0
EMBED_MODES = ("preview", "full", "none")  # how images go into the notebook (Imagen4Magics.embed, --embed)
# %imagen4 <subcommand>, in the help's order (subcommands.py runs them)
SUBCOMMANDS = ("history", "show", "status", "resume", "wait", "credits", "spend", "panel", "batch", "key",
               "webhook-key", "trust", "simulator", "info")

AddArgument = Callable[..., Any]  # argparse's add_argument (of a parser or of a group)


class CellError(UsageError):
    """A failure of the magic, shown as one line (no traceback) in the notebook: the message of `error`, the
    package's exception behind it (also the `__cause__` when raised `from` it, so `%tb` still has it)."""

    def __init__(self, error: BaseException):
        self.error = error
        super().__init__(error.short() if isinstance(error, E.Imagen4Error) else f"{type(error).__name__}: {error}")

    def _render_traceback_(self) -> list[str]:  # IPython's hook for an exception's own rendering
        return [str(self)]


def add_request_flags(add: AddArgument, *, batch: bool = False) -> None:
    """-m, -n, -a, -s and --negative: the request fields a cell sets and a batch gives its items as defaults."""
    each = " for every item without its own" if batch else ""
    add("-m", "--model", metavar="MODEL", help=f"standard, fast or ultra, or a full name such as "
        f"google/imagen4-ultra{each} (default: {DEFAULT_MODEL}; see Imagen4Magics.model). Ultra makes one "
        "image per task; fast takes a whole-number seed.")
    add("-n", "--num-images", metavar="N", help=f"How many images{' per prompt' if batch else ''}, 1-4{each} "
        f"(default: {DEFAULT_NUM_IMAGES}; see Imagen4Magics.num_images).")
    add("-a", "--aspect-ratio", metavar="RATIO", help=f"One of 1:1 16:9 9:16 3:4 4:3{each} "
        "(default: the model's own, 16:9 for fast and 1:1 for standard and ultra; see "
        "Imagen4Magics.aspect_ratio).")
    add("-s", "--seed", metavar="SEED", help=f"Seed (text or a number){each}. A seeded request that succeeded "
        "before is shown again from the history without a new task (see Imagen4Magics.reuse).")
    add("--negative", metavar="TEXT", help=f"Negative prompt{each}" + (
        "." if batch else " (or write it below a line holding only ---)."))


def add_flow_flags(add: AddArgument, *, batch: bool = False) -> None:
    """--wait, --no-wait, --force and -o: how a cell or a batch is sent and followed."""
    what = "every item has finished" if batch else "the images are there"
    add("--wait", action="store_true", help=f"Block until {what} (default in headless runs).")
    add("--no-wait", action="store_true", help="Return at once; " + (
        "the table appears when every item has finished" if batch else "the card and images update in place")
        + " (default in interactive notebooks).")
    add("--force", action="store_true", help="Create a new task even if this exact request succeeded before.")
    add("-o", "--out", metavar="NAME", help="Bind the BatchResult to NAME at once." if batch else
        "Bind the job handle to NAME at once (NAME.task_id, NAME.wait(), NAME.images).")


def add_cell_flags(add: AddArgument) -> None:
    """Every flag of a `%%imagen4` cell."""
    add_request_flags(add)
    add("--callback-url", metavar="URL", help="An http(s) URL the service POSTs the finished task to.")
    add_flow_flags(add)
    add("--embed", choices=EMBED_MODES,
        help="preview (bounded, default), full (original bytes) or none (file paths only).")


class Command:
    """One `%imagen4` subcommand: its sub-parser, its arguments in order (argparse actions) and its summary."""

    def __init__(self, name: str, summary: str, parser: Any, handler: Callable[..., None]):
        self.name, self.summary, self.parser = name, summary, parser
        self.actions: list[Any] = []
        parser.set_defaults(handler=handler)

    def add(self, *names: str, **options: Any) -> Any:
        """`add_argument` on the sub-parser, remembering the action."""
        action = self.parser.add_argument(*names, **options)
        self.actions.append(action)
        return action

    def options(self) -> list[str]:
        return [o for a in self.actions for o in a.option_strings]

    def usage(self) -> str:
        """`history [--limit N] [--search TEXT] [--export FILE]`"""
        parts = [self.name]
        for a in self.actions:
            if not a.option_strings:
                parts.append(a.metavar or a.dest.upper())
            elif a.nargs == 0:
                parts.append(f"[{a.option_strings[0]}]")
            else:
                parts.append(f"[{a.option_strings[0]} {a.metavar or a.dest.upper()}]")
        return " ".join(parts)


class shared_flags:  # noqa: N801 - named like IPython's @argument, which it stands for
    """`shared_flags(add_cell_flags)`, given to `@lazy_arguments`: adds those flags to the parser it builds, and
    keeps their argparse actions (`actions`, `options()`: argparse keeps its own list private). Asking for them
    builds that parser if it was not built yet."""

    def __init__(self, *adders: Callable[..., None], **options: Any):
        self.adders, self.options = adders, options
        self.added: list[Any] = []
        self.build: Callable[[], Any] | None = None  # builds the parser these flags are added to (lazy_arguments)

    @property
    def actions(self) -> list[Any]:
        if not self.added and self.build is not None:
            self.build()
        return self.added

    def add_to_parser(self, parser: Any, group: Any) -> None:
        target = group if group is not None else parser

        def add(*names: str, **kw: Any) -> Any:
            action = target.add_argument(*names, **kw)
            self.added.append(action)
            return action

        for adder in self.adders:
            adder(add, **self.options)

    def option_strings(self) -> list[str]:
        return [o for a in self.actions for o in a.option_strings]


class lazy_arguments:  # noqa: N801 - a decorator, named like IPython's @magic_arguments it stands for
    """`@lazy_arguments(name, epilog, *flags)` on a magic method, in place of IPython's `@magic_arguments`, `@kwds`
    and `@argument`s: the same argparse parser (`.parser`) and the same help (`__doc__`: usage, the docstring,
    the options of each `shared_flags`, `epilog()`), built on first use (`%imagen4?`, `--help`, the first cell)
    rather than when the class is defined, i.e. at `%load_ext`. Looked up on an instance it is a bound method
    (`types.MethodType`), as a plain function is, so IPython registers, calls and inspects it as before:
    attributes (`_ipython_no_var_expand`, ...), signature and source (`__wrapped__`) are the function's; only
    `__doc__` is computed."""

    def __init__(self, name: str, epilog: Callable[[], str], *flags: shared_flags):
        self.name, self.epilog, self.flags = name, epilog, flags

    def __call__(self, func: Callable[..., Any]) -> LazyArgumentsMagic:
        return LazyArgumentsMagic(func, self.name, self.epilog, self.flags)


class LazyArgumentsMagic:
    # no class docstring: `__doc__` is the property below (the magic's help)
    def __init__(self, func: Callable[..., Any], name: str, epilog: Callable[[], str], flags: Iterable[shared_flags]):
        self.__wrapped__ = func
        self.__name__, self.__qualname__, self.__module__ = func.__name__, func.__qualname__, func.__module__
        self.name, self.epilog, self.flags = name, epilog, tuple(flags)
        self.built: tuple[Any, str] | None = None  # (the parser, the help)
        self.lock = threading.Lock()
        for group in self.flags:
            group.build = self.build

    def build(self) -> tuple[Any, str]:
        """The parser and the help, built once (what IPython's `construct_parser` does at class creation)."""
        with self.lock:
            if self.built is None:
                from IPython.core.magic_arguments import MagicArgumentParser

                parser = MagicArgumentParser(self.name, description=self.__wrapped__.__doc__, epilog=self.epilog())
                for group in self.flags:
                    group.add_to_parser(parser, None)
                self.built = parser, parser.format_help()
            return self.built

    @property
    def parser(self) -> Any:
        return self.build()[0]

    @property
    def __doc__(self) -> str:  # type: ignore[override]  # built on first use, so a property, not the attribute
        return self.build()[1]

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self if instance is None else types.MethodType(self, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # what other decorators set on the function
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__wrapped__, name)


def split_line(line: str) -> list[str]:
    """A magic's line as words, with shell-style quoting (`--negative "two words"` gives `two words`)."""
    import shlex

    try:
        return shlex.split(line)
    except ValueError as err:
        raise UsageError(f"Could not read the options: {err} (check the quotes).") from None


def parse_words(parser: Any, argv: list[str], known: Iterable[str]) -> Any:
    """Parse `argv`; an option nobody knows is a one-line UsageError that names the closest of `known`."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise UsageError(unrecognized(extras, known))
    return args


def unrecognized(extras: list[str], options: Iterable[str]) -> str:
    """`unrecognized arguments: --seeds 3; did you mean --seed?`"""
    text = f"unrecognized arguments: {' '.join(extras)}"
    for word in extras:
        if word.startswith("-"):
            hint = did_you_mean(word.split("=", 1)[0], options)
            if hint:
                return f"{text}; {hint}"
    return text


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """`did you mean history?` for the known name closest to `word` (empty when none is close)."""
    import difflib

    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


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


class Choice(Enum):
    """An `Enum` trait whose error is one sentence: `aspect_ratio '2:1' is not supported; use one of ...`."""

    def error(self, obj: Any, value: Any, error: Exception | None = None, info: str | None = None) -> Any:
        if error is not None:
            return super().error(obj, value, error, info)
        values = self.values or ()  # always given: Choice(values, default)
        shown = ", ".join(str(v) for v in values if v != "")
        unset = " (or '' for the model's own default)" if "" in values else ""
        raise TraitError(f"{self.name} {value!r} is not supported; use one of {shown}{unset}.")


def split_body(cell: str) -> tuple[str, str | None]:
    """The prompt above a line holding only `---`, the negative prompt below it (None without such a line)."""
    lines = cell.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "---":
            return "\n".join(lines[:i]).strip(), "\n".join(lines[i + 1:]).strip()
    return cell.strip(), None


# the end of `%%imagen4?` (after the subcommands): where the defaults and the key come from
DEFAULTS_HELP = """

Defaults: %config Imagen4Magics (model, aspect_ratio, num_images, wait, timeout, poll_interval, history_folder,
notebook, embed, preview_size, reuse, display_mode, refresh_interval, track_credits, budget, prices). The API
key comes from APIKLEY_API_KEY, a .env file beside the notebook, or %imagen4 key (typed, kept in memory), and is
never stored or shown; %imagen4 simulator tries everything without an account. %imagen4 info says which is in
use."""
