"""X/Y/Z grids over any request field or prompt placeholder, with what each cell cost and how long it took.

`grid("A {animal} at dusk, {style}", x={"model": ["fast", "standard", "ultra"]}, y={"animal": ["fox", "owl"]},
style="watercolor", seed=7)` runs one batch (`generate_many`: reuse, resume, pacing, budgets and `dry_run=True`
apply) and returns the labelled `Grid`; `z={...}` gives one sheet per value (a `GridSet`). Each cell's caption
and the output metadata carry the model, the credits and the seconds; with `model` on an axis the sheet ends
with one summary line per model (images, credits per image, median seconds).
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..api import errors as E
from ..api.models import model_spec, short_name
from ..api.request import GenerationRequest
from ..api.spend import PriceBook, default_price_book, format_credits
from .grids import Grid, made_on_simulator
from .sheet import compose
from .templates import AXIS_FIELDS, check_axes, placeholders, request_fields

BATCH_OPTIONS = ("session", "client", "concurrency", "force", "reuse", "progress", "timeout", "name", "wait",
                 "dry_run", "budget", "prices")
FIXED_FIELDS = (*AXIS_FIELDS, "callback_url")


class GridSet(list):
    """The sheets of a grid with a `z` axis, one per z value (a list of `Grid`s), shown one after the other."""

    def __init__(self, grids: list[Grid], batch: Any = None, summary: list[str] | None = None):
        super().__init__(grids)
        self.batch = batch
        self.summary = list(summary or [])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        for sheet in self:
            display(sheet)

    def save(self, folder: Any, stem: str = "grid") -> list[Any]:
        """Write each sheet as `<folder>/<stem>-<n>.png` (with its provenance); returns the paths."""
        from pathlib import Path

        return [sheet.save(Path(folder) / f"{stem}-{n}.png") for n, sheet in enumerate(self, 1)]


def _axis(name: str, axis: Any) -> tuple[str, list[Any]] | None:
    if axis is None:
        return None
    if not isinstance(axis, Mapping) or len(axis) != 1:
        raise E.InvalidRequestError(f"{name}= takes one field and its values, e.g. {name}={{'model': ['fast', "
                                    "'ultra']}.")
    ((field, values),) = axis.items()
    return str(field), values


def label(field: str, value: Any) -> str:
    """How an axis value reads on the sheet: `ultra`, `seed 7`, `16:9`, `2 images`, `neg: text`, or the
    placeholder's value."""
    if value is None:
        return f"no {field.replace('_', ' ')}"
    if field == "model":
        return model_spec(value).short
    if field == "seed":
        return f"seed {value}"
    if field == "num_images":
        return f"{value} image{'s' if str(value) != '1' else ''}"
    if field == "negative_prompt":
        return f"neg: {value}"
    return str(value)


def _cell_name(chosen: Mapping[str, Any], names: dict[str, str]) -> str:
    return ", ".join(f"{axis}: {field}={chosen[field]!r}" for axis, field in names.items())


def cell_facts(item: Any, session: Any, prices: PriceBook) -> dict[str, Any] | None:
    """What one cell's task cost and took: model, credits (measured or an estimate), seconds (the service's
    cost time, else the time the job took), images, reused. For a reused cell, what the task cost when it was
    made (the history's record); None for a cell with no images."""
    if item is None or getattr(item, "state", None) != "success":
        return None
    job, model = item.job, item.request.model
    entry = session.history.get(item.task_id) if session is not None and item.task_id else None
    cost = job.cost if job is not None else None
    if cost is None and entry is not None and entry.credits is not None:
        cost = (entry.credits, entry.credits_measured)
    if cost is None:
        cost = prices.price(model)
    ms = job.record.cost_time_ms if job is not None and job.record is not None else None
    if ms is None and entry is not None:
        ms = entry.cost_time_ms
    seconds = ms / 1000 if ms is not None else (round(job.elapsed, 3) if job is not None else None)
    return {"model": model, "credits": float(cost[0]), "measured": bool(cost[1]), "seconds": seconds,
            "images": len(item.images), "reused": item.origin == "reused"}


def caption(facts: dict[str, Any] | None) -> str | None:
    """`fast · ~4 cr · 2.1 s` (`~` marks an estimate)."""
    if facts is None:
        return None
    parts = [short_name(facts["model"]), f"{'' if facts['measured'] else '~'}{format_credits(facts['credits'])} cr"]
    if facts["seconds"] is not None:
        parts.append(f"{facts['seconds']:.1f} s")
    return " · ".join(parts)


def model_summary(facts: list[dict[str, Any] | None]) -> list[str]:
    """One line per model, in order of first appearance: images, credits per image, median seconds."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for f in facts:
        if f is not None:
            by_model.setdefault(f["model"], []).append(f)
    lines = []
    for model, rows in by_model.items():
        images = sum(r["images"] for r in rows)
        credits = sum(r["credits"] for r in rows)
        approx = "" if all(r["measured"] for r in rows) else "~"
        secs = [r["seconds"] for r in rows if r["seconds"] is not None]
        per = format_credits(round(credits / images, 2)) if images else "-"
        med = f"median {statistics.median(secs):.1f} s" if secs else "no time"
        lines.append(f"{short_name(model)}: {images} image{'s' if images != 1 else ''}, {approx}{per} credits/image, "
                     f"{med}")
    return lines


def grid(prompt: str, x: Mapping[str, Any], y: Mapping[str, Any] | None = None, z: Mapping[str, Any] | None = None,
         *, title: str | None = None, cell_size: int = 256, **fixed: Any) -> Any:
    """An X/Y(/Z) grid: one task per combination of the axes' values, laid out as a labelled sheet.

    An axis is `{field: [values]}` where the field is a request field (model, seed, aspect_ratio,
    negative_prompt, num_images) or a `{name}` placeholder of `prompt`; `x` runs along the columns, `y` down the
    rows, `z` gives one sheet per value (a `GridSet`, a list of `Grid`s). `fixed`: the placeholders' values
    and request fields that every cell shares (style="watercolor", seed=7, model="fast"), and `generate_many`'s
    options (session=, client=, concurrency=, force=, reuse=, progress=, timeout=, budget=, dry_run=, prices=).

    Every cell is validated before anything is sent; a combination a model cannot take is refused naming the
    cell. Runs through `generate_many`: a second run creates nothing, `dry_run=True` returns the `BatchPlan`.
    Each cell's caption says the model, the credits (`~`: an estimate) and the seconds; the output metadata has
    them per cell; with `model` on an axis the sheet ends with one line per model.
    """
    if not isinstance(prompt, str):
        raise E.InvalidRequestError("grid() takes the prompt (a template with {name} placeholders) first.")
    options = {k: fixed.pop(k) for k in list(fixed) if k in BATCH_OPTIONS}
    names = placeholders(prompt)
    unknown = [k for k in fixed if k not in FIXED_FIELDS and k not in names]
    if unknown:
        raise E.InvalidRequestError(f"{unknown[0]!r} is not a request field, a {{placeholder}} of the prompt or "
                                    f"an option of generate_many ({', '.join(BATCH_OPTIONS)}).")
    axes = {k: a for k, a in (("x", _axis("x", x)), ("y", _axis("y", y)), ("z", _axis("z", z))) if a is not None}
    if "x" not in axes:
        raise E.InvalidRequestError("grid() needs an x axis, e.g. x={'model': ['fast', 'standard', 'ultra']}.")
    fields = [f for f, _ in axes.values()]
    if len(set(fields)) != len(fields):
        raise E.InvalidRequestError(f"Each axis needs its own field; {fields} repeats one.")
    clash = [f for f in fields if f in fixed]
    if clash:
        raise E.InvalidRequestError(f"{clash[0]!r} is on an axis and also fixed; give it in one place.")
    lists = check_axes(prompt, {f: v for f, v in axes.values()}, fixed)
    axis_names = {a: f for a, (f, _) in axes.items()}
    xs = lists[axis_names["x"]]
    ys = lists[axis_names["y"]] if "y" in axis_names else [None]
    zs = lists[axis_names["z"]] if "z" in axis_names else [None]

    items: list[dict[str, Any]] = []
    for zv in zs:
        for yv in ys:
            for xv in xs:
                chosen = {**fixed, axis_names["x"]: xv}
                if "y" in axis_names:
                    chosen[axis_names["y"]] = yv
                if "z" in axis_names:
                    chosen[axis_names["z"]] = zv
                fields_ = request_fields(prompt, names, chosen)
                try:  # each cell for its own model, before anything is sent
                    GenerationRequest.create(fields_.pop("prompt"), **fields_)
                except E.InvalidRequestError as err:
                    raise E.InvalidRequestError(f"Cell ({_cell_name(chosen, axis_names)}): {err} Nothing was "
                                                "sent.") from None
                items.append(request_fields(prompt, names, chosen))

    from .batch import default_session, generate_many
    from .budget import BatchPlan

    result = generate_many(items, **options)
    if isinstance(result, BatchPlan):  # dry_run: nothing was sent, there is nothing to draw
        return result
    session = options.get("session")
    if session is None and options.get("client") is None:
        session = default_session()
    book = options.get("prices") or (session.spending.prices if session is not None else default_price_book())
    facts_all = [cell_facts(it, session, book) for it in result.items]
    with_model = "model" in axis_names.values()
    summary = model_summary(facts_all) if with_model else []
    simulated = made_on_simulator(result.items, options)
    base_title = title if title is not None else _title(prompt, axis_names, fixed)
    n_x, n_y = len(xs), len(ys)
    sheets: list[Grid] = []
    axes_meta = {a: {"field": f, "values": [v if isinstance(v, (str, int, float)) or v is None else str(v)
                                            for v in lists[f]]} for a, f in axis_names.items()}
    for k, zv in enumerate(zs):
        block = result.items[k * n_x * n_y:(k + 1) * n_x * n_y]
        facts_z = facts_all[k * n_x * n_y:(k + 1) * n_x * n_y]
        cells = [list(block[r * n_x:(r + 1) * n_x]) for r in range(n_y)]
        facts = [list(facts_z[r * n_x:(r + 1) * n_x]) for r in range(n_y)]
        rows = [label(axis_names["y"], v) for v in ys] if "y" in axis_names else [""]
        cols = [label(axis_names["x"], v) for v in xs]
        sheet_summary = model_summary(facts_z) if with_model else []
        sheet_title = base_title if zv is None and "z" not in axis_names else (
            f"{base_title} · {label(axis_names['z'], zv)}")
        image, layout = compose(cells, row_labels=rows if "y" in axis_names else None, col_labels=cols,
                                title=sheet_title, cell_size=cell_size,
                                captions=[caption(f) for row in facts for f in row], footer=sheet_summary)
        sheets.append(Grid(image, layout, row_labels=rows, col_labels=cols, cells=cells, batch=result,
                           title=sheet_title, kind=" x ".join(axis_names[a] for a in ("x", "y") if a in axis_names),
                           simulated=simulated, facts=facts, summary=sheet_summary, axes=axes_meta,
                           template=prompt))
    if "z" in axis_names:
        return GridSet(sheets, batch=result, summary=summary)
    return sheets[0]


def _title(prompt: str, axis_names: dict[str, str], fixed: Mapping[str, Any]) -> str:
    """`model x animal · style=watercolor, seed=7` (the prompt template follows when it is short)."""
    parts = " x ".join(axis_names[a] for a in ("x", "y") if a in axis_names)
    shared = ", ".join(f"{k}={v}" for k, v in fixed.items() if v is not None and k != "callback_url")
    return f"{parts}{f' · {shared}' if shared else ''} · {prompt}"
