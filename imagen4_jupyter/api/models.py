"""The Imagen 4 family as the service documents it (../shared/api/apikley.md, section 6).

Three models on the same createTask / recordInfo endpoints, with request schemas that differ:

| model                  | short      | default ratio | num_images      | seed                         |
|------------------------|------------|---------------|-----------------|------------------------------|
| `google/imagen4`       | `standard` | 1:1           | string "1"-"4"  | string, at most 500 chars    |
| `google/imagen4-fast`  | `fast`     | 16:9          | string "1"-"4"  | integer                      |
| `google/imagen4-ultra` | `ultra`    | 1:1           | absent (one)    | string, at most 500 chars    |

`list_price` is one public upstream price list (credits per task); Apikley's own prices may differ, so it is
only ever shown as an estimate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequestError


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts. `integer_seed`: the body's seed is a JSON integer (fast), else a string."""

    name: str
    short: str
    title: str
    default_ratio: str
    max_images: int
    integer_seed: bool
    list_price: int

    @property
    def multi_image(self) -> bool:
        return self.max_images > 1


STANDARD = ModelSpec("google/imagen4", "standard", "Imagen 4", "1:1", 4, False, 6)
FAST = ModelSpec("google/imagen4-fast", "fast", "Imagen 4 Fast", "16:9", 4, True, 4)
ULTRA = ModelSpec("google/imagen4-ultra", "ultra", "Imagen 4 Ultra", "1:1", 1, False, 12)
MODELS: dict[str, ModelSpec] = {m.name: m for m in (STANDARD, FAST, ULTRA)}
DEFAULT_MODEL = STANDARD.name
SHORT_NAMES: dict[str, str] = {m.short: m.name for m in MODELS.values()}
MODEL_CHOICES = tuple(SHORT_NAMES) + tuple(MODELS)  # what a user may type
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "3:4", "4:3")  # every model accepts these
MAX_IMAGES = max(m.max_images for m in MODELS.values())  # the most images of one task (4; ultra makes one)
MAX_INT_SEED = 2**31 - 1  # fast's seed is a JSON integer; its range is not documented, int32 is what is safe


def model_spec(value: Any = None) -> ModelSpec:
    """The model named by `value`: a full name (`google/imagen4-ultra`), a short one (`ultra`), or None for the
    default (`google/imagen4`). Anything else is an InvalidRequestError that lists the choices."""
    if value is None or value == "":
        return STANDARD
    if isinstance(value, ModelSpec):
        return value
    if not isinstance(value, str):
        raise InvalidRequestError(f"The model must be a name such as 'fast', not {type(value).__name__}.")
    text = value.strip().lower()
    name = SHORT_NAMES.get(text, text)
    if name not in MODELS:
        choices = ", ".join(f"{m.short} ({m.name})" for m in MODELS.values())
        raise InvalidRequestError(f"Unknown model {value!r}; use one of {choices}.")
    return MODELS[name]


def short_name(name: str | None) -> str:
    """`ultra` for `google/imagen4-ultra`; an unknown name as it is."""
    spec = MODELS.get(name or DEFAULT_MODEL)
    return spec.short if spec else str(name)
