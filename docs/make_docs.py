"""Regenerate the reference tables in docs/*.md from the code, so they cannot drift from it.

    .venv/bin/python docs/make_docs.py           rewrite the generated blocks in place
    .venv/bin/python docs/make_docs.py --check   exit 1 (and say which) if a block is out of date

A generated block sits between `<!-- generated:NAME -->` and `<!-- end generated:NAME -->`; everything
outside the markers is hand-written. Blocks:

  traits       every `%config Imagen4Magics.<trait>`: type, default, allowed values, help   (docs/magic.md)
  flags        every `%%imagen4` flag with its help                                        (docs/magic.md)
  subcommands  every `%imagen4 <subcommand>` with its options                              (docs/magic.md)
  simulator    every `python -m imagen4_jupyter.simulator` option                          (docs/simulator.md)

tests/test_docs.py runs the check and also looks for every flag, trait, subcommand, environment variable
and exception class in the docs.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

def _cell(text: Any) -> str:
    """Text for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


# -- %config Imagen4Magics ----------------------------------------------------------------------------
def traits() -> list[tuple[str, Any]]:
    """(name, trait) of every configurable trait, in the order the class defines them."""
    from imagen4_jupyter.notebook.magics import Imagen4Magics

    configurable = Imagen4Magics.class_traits(config=True)
    order = [name for klass in reversed(Imagen4Magics.__mro__) for name in vars(klass) if name in configurable]
    seen: list[str] = []
    for name in order:
        if name not in seen:
            seen.append(name)
    return [(name, configurable[name]) for name in seen]


def traits_block() -> str:
    rows = ["| trait | type | default | values | meaning |", "|---|---|---|---|---|"]
    for name, trait in traits():
        values = getattr(trait, "values", None)
        shown = " / ".join(f"`{v!r}`" for v in values) if values else ""
        kind = next(k.__name__ for k in type(trait).__mro__ if k.__module__.startswith("traitlets"))
        default = repr(trait.default_value)
        rows.append(f"| `{name}` | {kind} | `{default}` | {shown} | {_cell(trait.help)} |")
    return "\n".join(rows)


# -- %%imagen4 flags ------------------------------------------------------------------------------------
def flags() -> list[Any]:
    """The argparse actions of the cell magic (the options users type after %%imagen4)."""
    from imagen4_jupyter.notebook.magics import CELL_FLAGS

    return list(CELL_FLAGS.actions)


def _flag_name(action: Any) -> str:
    names = "/".join(action.option_strings)
    if action.choices:
        return f"{names} {{{','.join(action.choices)}}}"
    if action.nargs == 0:  # store_true
        return names
    return f"{names} {action.metavar or action.dest.upper()}"


def flags_block() -> str:
    rows = ["| flag | meaning |", "|---|---|"]
    for action in flags():
        rows.append(f"| `{_flag_name(action)}` | {_cell(action.help or '')} |")
    return "\n".join(rows)


# -- %imagen4 subcommands ---------------------------------------------------------------------------------
def subcommands() -> list[tuple[str, list[Any] | None]]:
    """(name, argparse actions or None) of every subcommand, from the one `%imagen4` parser; None: it takes
    no arguments."""
    from imagen4_jupyter.notebook.subcommands import commands

    return [(name, command.actions or None) for name, command in commands()[1].items()]


def _usage(name: str, actions: list[Any] | None) -> str:
    parts = [f"%imagen4 {name}"]
    for a in actions or []:
        if not a.option_strings:
            parts.append(a.metavar or a.dest.upper())
        elif a.nargs == 0:
            parts.append(f"[{'/'.join(a.option_strings)}]")
        else:
            parts.append(f"[{'/'.join(a.option_strings)} {a.metavar or a.dest.upper()}]")
    return " ".join(parts)


def subcommands_block() -> str:
    rows = ["| usage | options |", "|---|---|"]
    for name, actions in subcommands():
        opts = [f"`{'/'.join(a.option_strings)}`: {_cell((a.help or '').rstrip('.'))}"
                + (f" (default {a.default})" if a.default not in (None, False) and "default" not in (a.help or "")
                   and f"({a.default})" not in (a.help or "") else "")
                for a in actions or [] if a.option_strings]
        rows.append(f"| `{_usage(name, actions)}` | {'; '.join(opts) or '—'} |")
    return "\n".join(rows)


# -- the simulator's command line ------------------------------------------------------------------------
def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}".replace(",", "_") if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def simulator_block() -> str:
    from imagen4_jupyter.simulator.__main__ import build_parser

    rows = ["| option | default | meaning |", "|---|---|---|"]
    for a in build_parser()._actions:
        if not a.option_strings or a.dest == "help":
            continue
        if a.nargs == 0:
            flag = "/".join(a.option_strings)
        else:
            choices = "{" + ",".join(str(c) for c in a.choices) + "}" if a.choices else None
            meta = " ".join(a.metavar) if isinstance(a.metavar, tuple) else (a.metavar or choices or a.dest.upper())
            flag = f"{'/'.join(a.option_strings)} {meta}"
        values = a.default if isinstance(a.default, (tuple, list)) else (a.default,)
        default = "" if a.default is None or a.default is False else " ".join(_number(v) for v in values)
        rows.append(f"| `{flag}` | {default and f'`{default}`'} | {_cell(a.help or '')} |")
    return "\n".join(rows)


BLOCKS = {
    "traits": ("magic.md", traits_block),
    "flags": ("magic.md", flags_block),
    "subcommands": ("magic.md", subcommands_block),
    "simulator": ("simulator.md", simulator_block),
}


def render(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- end generated:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"make_docs: no <!-- generated:{name} --> block found")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    contents: dict[str, str] = {}
    for name, (file, make) in BLOCKS.items():
        path = DOCS / file
        text = contents.get(file, path.read_text(encoding="utf-8"))
        contents[file] = render(text, name, make())
    for file, text in contents.items():
        path = DOCS / file
        if path.read_text(encoding="utf-8") != text:
            stale.append(file)
            if not check:
                path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"make_docs: out of date: {', '.join(stale)}; run .venv/bin/python docs/make_docs.py", file=sys.stderr)
        return 1
    if not check:
        print(f"make_docs: {'rewrote ' + ', '.join(stale) if stale else 'nothing to change'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
