"""Prompt templates and axes: `{name}` placeholders filled from lists of values, every combination or a balanced
sample drawn with a fixed seed (`expand`), for `generate_many("A {animal}", values={...})` and `grid(...)`.

An axis is a request field (`AXIS_FIELDS`) or a `{name}` placeholder of the prompt. Placeholders are found with
the standard library's `string.Formatter` parser, so `{{` and `}}` are literal braces; only plain names are
placeholders (`{a.b}`, `{a[0]}` and format specs are refused, naming the fix).
"""
from __future__ import annotations

import itertools
import math
import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

from ..api import errors as E

AXIS_FIELDS = ("model", "seed", "aspect_ratio", "negative_prompt", "num_images")
MAX_COMBINATIONS = 10_000  # more than any batch should send; a typo in a list of values stays cheap


def _parsed(template: str) -> list[tuple[str, str | None]]:
    """(literal text, placeholder name or None) pieces of a template."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as err:
        raise E.InvalidRequestError(f"The prompt template has a stray brace ({err}); write {{{{ or }}}} for a "
                                    "literal one.") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in pieces:
        if name is not None and (not name.isidentifier() or spec or conversion):
            raise E.InvalidRequestError(f"{{{name}{'!' + conversion if conversion else ''}"
                                        f"{':' + spec if spec else ''}}} in the prompt template is not a plain "
                                        "{name}; use a plain name, or {{ }} for literal braces.")
        out.append((literal, name))
    return out


def placeholders(template: str) -> list[str]:
    """The `{name}` placeholders of a template, in order of first appearance."""
    seen: list[str] = []
    for _, name in _parsed(template):
        if name and name not in seen:
            seen.append(name)
    return seen


def fill(template: str, values: Mapping[str, Any]) -> str:
    """The template with each `{name}` replaced by `str(values[name])`; `{{`/`}}` become single braces."""
    parts = []
    for literal, name in _parsed(template):
        parts.append(literal)
        if name is not None:
            if name not in values:
                raise E.InvalidRequestError(f"No value for {{{name}}} in the prompt template; pass {name}=... .")
            parts.append(str(values[name]))
    return "".join(parts)


def _values(name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise E.InvalidRequestError(f"The values of {name!r} must be a list (wrap a single one in [...]).")
    listed = list(value)
    if not listed:
        raise E.InvalidRequestError(f"The list of values of {name!r} is empty.")
    return listed


def check_axes(template: str, axes: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every axis is a request field or a placeholder, every placeholder has a value (on an axis or fixed);
    returns the axes as lists."""
    names = placeholders(template)
    out: dict[str, list[Any]] = {}
    for name, value in axes.items():
        if name not in AXIS_FIELDS and name not in names:
            raise E.InvalidRequestError(f"{name!r} is neither a request field ({', '.join(AXIS_FIELDS)}) nor a "
                                        "{placeholder} of the prompt template.")
        out[name] = _values(name, value)
    missing = [n for n in names if n not in out and n not in fixed]
    if missing:
        raise E.InvalidRequestError(f"No value for {', '.join('{' + n + '}' for n in missing)} in the prompt "
                                    f"template; pass {missing[0]}=... or put it on an axis.")
    return out


def combination_count(axes: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in axes.values())


def balanced_sample(axes: Mapping[str, Sequence[Any]], n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """`n` distinct combinations (as index tuples, in product order) where each axis's values appear equally
    often (counts differ by at most one), drawn with `random.Random(seed)`: the same seed gives the same sample.

    Each axis gets a column of its values repeated to length n and shuffled; rows that repeat another row are
    mended by swapping values within a column (which keeps every column's counts)."""
    sizes = [len(v) for v in axes.values()]
    total = math.prod(sizes)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise E.InvalidRequestError(f"sample must be a whole number of at least 1, not {n!r}.")
    if n > total:
        raise E.InvalidRequestError(f"sample={n} is more than the {total} combinations there are; ask for at most "
                                    f"{total} (or leave sample out for all of them).")
    if n == total:
        return list(itertools.product(*(range(k) for k in sizes)))
    rng = random.Random(seed)
    for _attempt in range(20):
        columns = []
        for k in sizes:
            column = [i % k for i in range(n)]
            rng.shuffle(column)
            columns.append(column)
        rows = [list(r) for r in zip(*columns, strict=True)]
        if _mend(rows, len(sizes), rng):
            return sorted(tuple(r) for r in rows)
    raise E.InvalidRequestError(f"Could not draw {n} distinct balanced combinations; try another sample size.")


def _mend(rows: list[list[int]], width: int, rng: random.Random, budget: int = 20_000) -> bool:
    """Swap values within columns until no two rows are equal; False if the budget ran out. A swap is kept when
    it does not lower the number of distinct rows."""
    from collections import Counter

    counts = Counter(tuple(r) for r in rows)
    for _ in range(budget):
        dupes = [i for i, r in enumerate(rows) if counts[tuple(r)] > 1]
        if not dupes:
            return True
        i, j, c = rng.choice(dupes), rng.randrange(len(rows)), rng.randrange(width)
        if i == j or rows[i][c] == rows[j][c]:
            continue
        a, b = list(rows[i]), list(rows[j])
        a[c], b[c] = b[c], a[c]
        distinct = sum(1 for v in counts.values() if v > 0)
        trial = counts.copy()
        trial.subtract([tuple(rows[i]), tuple(rows[j])])
        trial.update([tuple(a), tuple(b)])
        if sum(1 for v in trial.values() if v > 0) >= distinct:
            counts, rows[i], rows[j] = trial, a, b
    return False


def expand(template: str, values: Mapping[str, Any], *, sample: int | None = None, sample_seed: int = 0,
           fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The request dicts of a template: one per combination of `values` (placeholders and request fields), or a
    balanced `sample` of them. `fixed`: placeholder values and request fields that every item shares."""
    if not isinstance(template, str):
        raise E.InvalidRequestError(f"The prompt template must be text, not {type(template).__name__}.")
    fixed = dict(fixed or {})
    axes = check_axes(template, values, fixed)
    total = combination_count(axes)
    if sample is None and total > MAX_COMBINATIONS:
        raise E.InvalidRequestError(f"{total} combinations are too many for one batch (at most "
                                    f"{MAX_COMBINATIONS}); pass sample=N to draw a balanced sample.")
    lists = list(axes.values())
    picks = (balanced_sample(axes, sample, sample_seed) if sample is not None
             else itertools.product(*(range(len(v)) for v in lists)))
    names = placeholders(template)
    items = []
    for pick in picks:
        chosen = {name: lists[a][i] for a, (name, i) in enumerate(zip(axes, pick, strict=True))}
        items.append(request_fields(template, names, {**fixed, **chosen}))
    return items


def request_fields(template: str, names: Sequence[str], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """One request dict: the filled prompt and the request fields among `chosen` (placeholder-only names are
    used for the text and dropped)."""
    from .items import REQUEST_FIELDS

    item = {k: v for k, v in chosen.items() if k in REQUEST_FIELDS and k != "prompt"}
    item["prompt"] = fill(template, {n: chosen[n] for n in names})
    return item
