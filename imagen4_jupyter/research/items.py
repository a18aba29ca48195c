"""What a batch is made of: its items validated into `GenerationRequest`s before anything is sent, and the id
that makes a rerun "the same batch" (`batch.py` sends them)."""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..api import errors as E
from ..api.cards import shorten
from ..api.models import model_spec
from ..api.request import GenerationRequest

REQUEST_FIELDS = ("prompt", "negative_prompt", "aspect_ratio", "num_images", "seed", "callback_url", "model")


def plain_value(value: Any) -> Any:
    """pandas/numpy cell values to plain Python: NaN/None to None, numpy integers to int."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if not isinstance(value, (bool, int, float, str)) and hasattr(value, "__index__"):
        try:
            return int(value.__index__())
        except Exception:
            return value
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "item") and type(value).__module__.startswith("numpy"):
        return plain_value(value.item())
    return value


def _as_list(items: Any) -> tuple[list, bool]:
    """A list of items; a DataFrame becomes its rows as dicts (only request-field columns are used)."""
    if isinstance(items, (str, bytes, GenerationRequest, Mapping)):
        raise E.InvalidRequestError("generate_many takes a list of prompts, request dicts or GenerationRequests; "
                                    "for a single prompt use the %%imagen4 magic or client.generate().")
    if hasattr(items, "columns") and hasattr(items, "to_dict"):  # a pandas DataFrame
        cols = [c for c in items.columns if c in REQUEST_FIELDS]
        if "prompt" not in cols:
            raise E.InvalidRequestError("The DataFrame has no `prompt` column; pass df['your column'] or rename it.")
        return items[cols].to_dict("records"), True
    if not isinstance(items, Iterable):
        raise E.InvalidRequestError(f"generate_many needs a list of items, not {type(items).__name__}.")
    return list(items), False


def _one_request(item: Any, base: dict[str, Any], from_frame: bool) -> GenerationRequest:
    if isinstance(item, GenerationRequest):
        return item
    if isinstance(item, str):
        return GenerationRequest.create(item, **base)
    if isinstance(item, Mapping):
        extra = sorted(str(k) for k in item if k not in REQUEST_FIELDS)
        if extra:
            raise E.InvalidRequestError(f"unknown field(s) {', '.join(extra)}; request fields are "
                                        f"{', '.join(REQUEST_FIELDS)}.")
        fields = {**base, **{k: plain_value(v) for k, v in item.items()}}
        if from_frame:  # an empty cell means "use the default"; 7.0 in a column with gaps means 7
            fields.update({k: base[k] for k, v in item.items() if plain_value(v) is None and k in base})
            fields = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in fields.items()}
        prompt = fields.pop("prompt", None)
        return GenerationRequest.create(prompt, **fields)
    if item is None:
        raise E.InvalidRequestError("the item is empty (None).")
    raise E.InvalidRequestError(f"expected a prompt, a dict or a GenerationRequest, not {type(item).__name__}.")


def build_requests(items: Any, **defaults: Any) -> list[GenerationRequest]:
    """Validate every item into a GenerationRequest; the first bad one raises, naming its index.

    Items are prompts (str), dicts of request fields (over `defaults`) or GenerationRequests (used as given).
    `model` (a default for every item, a dict key or a DataFrame column; `fast`, `standard`, `ultra` or a full
    name): every item is validated for its own model (ultra makes one image per task, fast takes whole-number
    seeds). An unknown default model is refused once, before any item.
    """
    unknown = sorted(set(defaults) - set(REQUEST_FIELDS) - {"prompt"})
    if unknown:
        raise E.InvalidRequestError(f"Unknown option(s) {', '.join(unknown)}; request fields are "
                                    f"{', '.join(REQUEST_FIELDS[1:])}.")
    if "prompt" in defaults:
        raise E.InvalidRequestError("`prompt` cannot be a default; each item gives its own prompt.")
    listed, from_frame = _as_list(items)
    base = {k: plain_value(v) for k, v in defaults.items()}
    if base.get("model") is not None:
        base["model"] = model_spec(base["model"]).name
    requests: list[GenerationRequest] = []
    for index, item in enumerate(listed):
        item = plain_value(item)
        try:
            requests.append(_one_request(item, base, from_frame))
        except E.InvalidRequestError as err:
            label = f"Item {index}"
            prompt = item.get("prompt") if isinstance(item, Mapping) else item
            if isinstance(prompt, str) and prompt.strip():
                label += f" ({shorten(prompt, 40)!r})"
            raise E.InvalidRequestError(f"{label}: {err} Nothing was sent.") from None
    return requests


def batch_id(requests: list[GenerationRequest], name: str | None = None) -> str:
    """What identifies "the same batch" in the history: the name if given, else the ordered request keys."""
    if name:
        return "name:" + name
    digest = hashlib.sha256(json.dumps([r.key() for r in requests]).encode()).hexdigest()
    return digest[:20]
