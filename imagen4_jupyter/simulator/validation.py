"""createTask body validation, following each model's documented schema (see :mod:`.models`).

Stricter than a lenient server on purpose: unknown fields (top level and in ``input``) and wrong JSON
types are rejected, so client bugs such as sending ``num_images`` as a number, a string seed to
``google/imagen4-fast``, ``num_images`` to ``google/imagen4-ultra`` or spelling ``callbackUrl`` show up
in tests. Every schema break answers body code 422, listing every problem found.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .models import ASPECT_RATIOS, DEFAULT_MODEL, MAX_PROMPT, MAX_SEED, MODELS, NUM_IMAGES, ModelSpec

MODEL = DEFAULT_MODEL
TOP_LEVEL_FIELDS = ("model", "callBackUrl", "input")
INPUT_FIELDS = MODELS[DEFAULT_MODEL].input_fields


def json_type(value: Any) -> str:
    """JSON type name of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _describe(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value[:40])
    return f"{json_type(value)} {text}"


def _enum_error(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    options = ", ".join(f'"{a}"' for a in allowed)
    if not isinstance(value, str):
        return f"{name} must be a string, one of {options} (got {_describe(value)})"
    return f"{name} must be one of {options} (got {value!r})"


def _string_error(name: str, value: Any, max_len: int) -> str | None:
    if not isinstance(value, str):
        return f"{name} must be a string (got {_describe(value)})"
    if len(value) > max_len:
        return f"{name} is too long: {len(value)} characters, at most {max_len} allowed"
    return None


def missing_required(body: Any) -> bool:
    """True when a field the schema requires (``model``, ``input``, ``input.prompt``) is absent."""
    if not isinstance(body, dict):
        return False
    if "model" not in body or "input" not in body:
        return True
    return isinstance(body["input"], dict) and "prompt" not in body["input"]


def validate_create_body(body: Any) -> list[str]:
    """Return every validation error of a decoded createTask body (empty = valid)."""
    if not isinstance(body, dict):
        return [f"request body must be a JSON object (got {json_type(body)})"]
    errors: list[str] = []
    for name in body:
        if name not in TOP_LEVEL_FIELDS:
            errors.append(f"unknown field {name!r} (allowed: {', '.join(TOP_LEVEL_FIELDS)})")
    names = ", ".join(repr(m) for m in MODELS)
    spec = MODELS[DEFAULT_MODEL]
    if "model" not in body:
        errors.append(f"model is required and must be one of {names}")
    elif not isinstance(body["model"], str) or body["model"] not in MODELS:
        errors.append(f"model must be one of {names} (got {_describe(body['model'])})")
    else:
        spec = MODELS[body["model"]]
    if "callBackUrl" in body:
        url = body["callBackUrl"]
        if not isinstance(url, str):
            errors.append(f"callBackUrl must be a string URI (got {_describe(url)})")
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                errors.append(f"callBackUrl must be an absolute http(s) URI (got {url[:100]!r})")
    if "input" not in body:
        errors.append("input is required (an object with at least 'prompt')")
    else:
        errors.extend(_validate_input(body["input"], spec))
    return errors


def _validate_input(data: Any, spec: ModelSpec) -> list[str]:
    if not isinstance(data, dict):
        return [f"input must be an object (got {json_type(data)})"]
    errors: list[str] = []
    allowed = spec.input_fields
    for name in data:
        if name not in allowed:
            why = f" ({spec.name} makes one image per task)" if name == "num_images" else ""
            errors.append(f"unknown field 'input.{name}' for {spec.name}{why} (allowed: {', '.join(allowed)})")
    if "prompt" not in data:
        errors.append("input.prompt is required")
    else:
        err = _string_error("input.prompt", data["prompt"], MAX_PROMPT)
        if err is None and not data["prompt"].strip():
            err = "input.prompt must not be empty"
        if err:
            errors.append(err)
    if "negative_prompt" in data:
        err = _string_error("input.negative_prompt", data["negative_prompt"], MAX_PROMPT)
        if err:
            errors.append(err)
    if "aspect_ratio" in data and data["aspect_ratio"] not in ASPECT_RATIOS:
        errors.append(_enum_error("input.aspect_ratio", data["aspect_ratio"], ASPECT_RATIOS))
    if "num_images" in data and spec.has_num_images:
        value = data["num_images"]
        if not isinstance(value, str) or value not in NUM_IMAGES:
            errors.append(_enum_error("input.num_images", value, NUM_IMAGES))
    if "seed" in data:
        err = _seed_error(data["seed"], spec)
        if err:
            errors.append(err)
    return errors


def _seed_error(value: Any, spec: ModelSpec) -> str | None:
    if spec.seed_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"input.seed must be an integer for {spec.name} (got {_describe(value)})"
        return None
    return _string_error("input.seed", value, MAX_SEED)
