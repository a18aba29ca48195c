"""The package type-checks: `mypy imagen4_jupyter` with the configuration in pyproject.toml ([tool.mypy]) finds
no error, so the type hints keep their promise (run by the README's test command, as CI does)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_the_package():
    # mypy's own incremental cache (.mypy_cache, git-ignored): a first run takes about 15 s, later ones a few
    proc = subprocess.run([sys.executable, "-m", "mypy", "imagen4_jupyter"], cwd=ROOT, capture_output=True,
                          text=True, timeout=280)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    assert "Success" in said, said


def test_every_type_ignore_names_its_code_and_says_why():
    package = ROOT / "imagen4_jupyter"
    ignores, bare = 0, []
    for path in sorted(package.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if "type: ignore" not in line:
                continue
            ignores += 1
            if not re.search(r"# type: ignore\[[a-z-]+(, *[a-z-]+)*\] +# +\S", line):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert ignores > 0, "no type: ignore found at all: this test would not notice a bare one"
    assert not bare, "a type: ignore without its code or its reason:\n" + "\n".join(bare)
