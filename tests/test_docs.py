"""The docs cover what the code has: every flag, subcommand, trait, environment variable and exception class.

The reference tables (flags, subcommands, traits, simulator options) are generated from the code by
docs/make_docs.py; this test fails when they are stale, so a new trait or flag cannot go undocumented.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

import make_docs  # noqa: E402


def docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))


def test_generated_blocks_are_current():
    proc = subprocess.run([sys.executable, str(DOCS / "make_docs.py"), "--check"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.mark.parametrize("name", [name for name, _ in make_docs.traits()])
def test_every_trait_is_documented(name):
    assert f"`{name}`" in (DOCS / "magic.md").read_text(encoding="utf-8")


def test_every_flag_is_documented_with_an_example():
    text = (DOCS / "magic.md").read_text(encoding="utf-8")
    examples = re.findall(r"^%%imagen4\b(.*)$", text, re.M)
    for action in make_docs.flags():
        for option in action.option_strings:
            assert f"`{option}" in text or f"/{option}" in text, f"{option} is not in docs/magic.md"
        assert any(re.search(rf"(^|\s){re.escape(o)}(\s|$)", line) for o in action.option_strings
                   for line in examples), f"no %%imagen4 example uses {action.option_strings}"


def test_every_subcommand_and_its_options_are_documented():
    text = (DOCS / "magic.md").read_text(encoding="utf-8")
    for name, actions in make_docs.subcommands():
        assert f"### `%imagen4 {name}" in text, f"%imagen4 {name} has no section in docs/magic.md"
        for action in actions or []:
            for option in action.option_strings:
                assert option in text, f"%imagen4 {name} {option} is not in docs/magic.md"


def test_option_metavars_match_their_help():
    """An option's help names its value as the usage does (`--limit N`, not `--limit LIMIT` beside "at most
    N"): every upper-case word of the help is the option's metavar."""
    options = [(f"%imagen4 {name}", a) for name, actions in make_docs.subcommands() for a in actions or []]
    options += [("%%imagen4", a) for a in make_docs.flags()]
    for where, action in options:
        if not action.option_strings or action.nargs == 0 or action.choices:
            continue
        shown = action.metavar or action.dest.upper()
        named = set(re.findall(r"\b[A-Z][A-Z_]*\b", action.help or "")) - {"A", "I"}  # not the words
        assert named <= {shown}, f"{where} {'/'.join(action.option_strings)} {shown}: help says {action.help!r}"


def test_every_environment_variable_is_documented():
    """Every os.environ variable the package reads appears in the docs (real-service.md has the table)."""
    names = set()
    for path in (ROOT / "imagen4_jupyter").rglob("*.py"):
        names |= set(re.findall(r"""environ(?:\.get)?[\[(]\s*["']([A-Z_][A-Z0-9_]*)["']""", path.read_text()))
    names -= {"PYTHONPATH"}  # set by the demo for its own kernels, not a user setting
    assert {"APIKLEY_API_KEY", "APIKLEY_BASE_URL", "APIKLEY_ALLOW_INSECURE_HTTP"} <= names
    table = (DOCS / "real-service.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}`" not in table)
    assert not missing, f"environment variables missing from docs/real-service.md: {missing}"


def test_every_exception_class_is_documented():
    import imagen4_jupyter.api.errors as E

    classes = [c for c in vars(E).values() if isinstance(c, type) and issubclass(c, E.Imagen4Error)]
    text = (DOCS / "python-api.md").read_text(encoding="utf-8")
    missing = [c.__name__ for c in classes if f"`{c.__name__}`" not in text]
    assert not missing, f"exception classes missing from docs/python-api.md: {missing}"
    for cls in classes:
        if cls is not E.Imagen4Error and isinstance(cls.__dict__.get("title"), str):
            assert cls.title in text, f"{cls.__name__}'s title {cls.title!r} is not in the errors table"


def test_every_public_name_is_documented():
    import imagen4_jupyter

    text = docs_text()
    skip = {"load_ipython_extension", "unload_ipython_extension"}
    missing = [n for n in imagen4_jupyter.__all__ if n not in skip and n not in text]
    assert not missing, f"public names missing from docs/: {missing}"


def test_simulator_fault_kinds_are_documented():
    from imagen4_jupyter.simulator.faults import KINDS, MODIFIERS

    text = (DOCS / "simulator.md").read_text(encoding="utf-8")
    missing = [k for k in (*KINDS, *MODIFIERS) if f"`{k}=" not in text]
    assert not missing, f"fault options missing from docs/simulator.md: {missing}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


# pages other people are writing; linked already, and checked like the others as soon as they exist
PENDING = {ROOT / "docs" / "reliability.md", ROOT / "benchmarks" / "README.md"}


def test_links_between_docs_resolve():
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if "://" in target:
                continue
            path = (page.parent / target).resolve() if target else page
            if path in PENDING and not path.exists():
                continue
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{page.relative_to(ROOT)} links to missing {target}#{anchor}"


def test_readme_setup_has_exactly_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert [c.split()[0] for c in commands] == ["./scripts/demo", "./scripts/test"]
    assert "![The imagen4 panel](docs/panel.png)" in readme
