"""The generation request: fields, defaults, validation against the schema, payload, interpolation.

Pure code: nothing here does I/O. The schemas are those of the Imagen 4 family (`models.py`); the authority for
`google/imagen4` is `seed-createTask-openapi.txt`.
"""
from __future__ import annotations

import hashlib
import json
import operator
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from .credentials import holds_secret
from .errors import InvalidRequestError
from .models import ASPECT_RATIOS, DEFAULT_MODEL, MAX_IMAGES, MAX_INT_SEED, ModelSpec, model_spec

MODEL = DEFAULT_MODEL  # the default model (older code imports this name)
MAX_PROMPT = 5000
MAX_SEED = 500


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-image request, already validated for its model and normalised (`num_images` an int, `seed` a
    str or None, `model` the full name)."""

    prompt: str
    negative_prompt: str | None = None
    aspect_ratio: str = "1:1"
    num_images: int = 1
    seed: str | None = None
    callback_url: str | None = None
    model: str = DEFAULT_MODEL

    @classmethod
    def create(cls, prompt: Any, *, negative_prompt: Any = None, aspect_ratio: Any = None,
               num_images: Any = 1, seed: Any = None, callback_url: Any = None,
               model: Any = None) -> GenerationRequest:
        """Validate user input for its model and build a request; raises InvalidRequestError saying what to fix.

        `model`: `standard` (default), `fast` or `ultra`, or a full name such as `google/imagen4-ultra`.
        `aspect_ratio=None` takes the model's documented default (16:9 for fast, 1:1 for the others).
        """
        for what, value in (("prompt", prompt), ("negative prompt", negative_prompt), ("seed", seed),
                            ("callback URL", callback_url), ("model", model), ("aspect ratio", aspect_ratio)):
            check_text(value, what)
        spec = model_spec(model)
        return cls(
            prompt=_check_prompt(prompt, "prompt", required=True),
            negative_prompt=_check_prompt(negative_prompt, "negative prompt", required=False) or None,
            aspect_ratio=_check_ratio(aspect_ratio, spec),
            num_images=_check_num_images(num_images, spec),
            seed=_check_seed(seed, spec),
            callback_url=_check_callback(callback_url),
            model=spec.name,
        )

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild from `to_dict()` output (history records), validating again. Records made before models
        existed have no `model`: they were `google/imagen4` requests."""
        return cls.create(data.get("prompt"), negative_prompt=data.get("negative_prompt"),
                          aspect_ratio=data.get("aspect_ratio", "1:1"), num_images=data.get("num_images", 1),
                          seed=data.get("seed"), callback_url=data.get("callback_url"), model=data.get("model"))

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild from a createTask body (for example the `param` of a task record)."""
        inp = payload.get("input") or {}
        spec = model_spec(payload.get("model"))
        return cls.create(inp.get("prompt"), negative_prompt=inp.get("negative_prompt"),
                          aspect_ratio=inp.get("aspect_ratio", spec.default_ratio),
                          num_images=inp.get("num_images", "1"), seed=inp.get("seed"),
                          callback_url=payload.get("callBackUrl"), model=spec.name)

    def to_payload(self) -> dict[str, Any]:
        """The exact createTask JSON body of this model: `num_images` a string (absent for ultra), `seed` a
        string (an integer for fast); callBackUrl only if given."""
        spec = self.spec
        inp: dict[str, Any] = {"prompt": self.prompt, "aspect_ratio": self.aspect_ratio}
        if spec.multi_image:
            inp["num_images"] = str(self.num_images)
        if self.negative_prompt:
            inp["negative_prompt"] = self.negative_prompt
        if self.seed is not None:
            inp["seed"] = int(self.seed) if spec.integer_seed else self.seed
        body: dict[str, Any] = {"model": spec.name, "input": inp}
        if self.callback_url:
            body["callBackUrl"] = self.callback_url
        return body

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        """A stable hash of everything that decides the images (callback URL excluded), for reuse lookup.

        The default model is left out of the hash, so keys of `google/imagen4` requests are the ones earlier
        versions wrote and old histories keep reusing; any other model is part of the key."""
        ident = {k: v for k, v in self.to_dict().items()
                 if k != "callback_url" and not (k == "model" and v == DEFAULT_MODEL)}
        raw = json.dumps(ident, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def replace(self, **changes: Any) -> "GenerationRequest":
        data = self.to_dict()
        data.update(changes)
        return GenerationRequest.from_dict(data)


def check_text(value: Any, what: str) -> None:
    """Refuse, naming the field, text that cannot be sent (a lone surrogate: not encodable as UTF-8) or that holds
    a key of this process (the API or webhook key goes only in the Authorization header, never in a request,
    the history, a card or an export)."""
    if not isinstance(value, str):
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidRequestError(f"The {what} contains a character that cannot be sent (an unpaired surrogate "
                                  f"at position {err.start}); remove or retype it.") from None
    if holds_secret(value):
        raise InvalidRequestError(f"The {what} contains your API or webhook key; remove it (nothing was sent).")


def _check_prompt(value: Any, what: str, *, required: bool) -> str:
    if value is None:
        if required:
            raise InvalidRequestError(f"The {what} is empty: write what you want to see.")
        return ""
    if not isinstance(value, str):
        raise InvalidRequestError(f"The {what} must be text, not {type(value).__name__}.")
    if "\x00" in value:
        raise InvalidRequestError(f"The {what} contains a NUL character; remove it.")
    if required and not value.strip():
        raise InvalidRequestError(f"The {what} is empty: write what you want to see.")
    if len(value) > MAX_PROMPT:
        raise InvalidRequestError(
            f"The {what} has {len(value)} characters; the limit is {MAX_PROMPT}. "
            f"Shorten it by {len(value) - MAX_PROMPT}.")
    return value


def _check_ratio(value: Any, spec: ModelSpec) -> str:
    if value is None:
        return spec.default_ratio
    text = str(value).strip()
    if text not in ASPECT_RATIOS:
        raise InvalidRequestError(f"Aspect ratio {value!r} is not supported; use one of {', '.join(ASPECT_RATIOS)}.")
    return text


def _check_num_images(value: Any, spec: ModelSpec) -> int:
    number = _whole_number_of_images(value)
    if number > spec.max_images:
        raise InvalidRequestError(
            f"{spec.title} ({spec.short}) makes one image per task, so it cannot make {number}. For several, "
            "give each its own seed (one request per seed) or run a batch "
            f"(%imagen4 batch ... -m {spec.short}, or generate_many(..., model='{spec.short}')).")
    return number


def _whole_number_of_images(value: Any) -> int:
    if value is None:
        return 1
    bad = InvalidRequestError(f"The number of images must be a whole number from 1 to {MAX_IMAGES}, not {value!r}.")
    if isinstance(value, (bool, float)):
        raise bad
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):  # "٣".isdigit() is True but not ASCII
            raise bad
        number = int(text)
    else:
        try:
            number = operator.index(value)  # int, numpy integers; not floats or bools
        except TypeError:
            raise bad from None
    if not 1 <= number <= MAX_IMAGES:
        raise InvalidRequestError(f"The number of images must be from 1 to {MAX_IMAGES}, not {number}.")
    return number


def _check_seed(value: Any, spec: ModelSpec) -> str | None:
    text = _seed_text(value)
    if text is not None and spec.integer_seed:
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_INT_SEED:
            raise InvalidRequestError(f"{spec.title} ({spec.short}) takes a whole-number seed from 0 to "
                                      f"{MAX_INT_SEED}, not {shorten_value(text)}.")
        return str(int(text))  # "007" and 7 are the same seed in the body
    return text


def shorten_value(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _seed_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRequestError(f"The seed must be text or a whole number, not {type(value).__name__}.")
    if isinstance(value, int) and abs(value).bit_length() > 4 * MAX_SEED:  # str() of a huge int raises ValueError
        raise InvalidRequestError(f"The seed has more than {MAX_SEED} digits; the limit is {MAX_SEED}.")
    text = str(value)
    if text == "":
        return None
    if "\x00" in text:
        raise InvalidRequestError("The seed contains a NUL character; remove it.")
    if len(text) > MAX_SEED:
        raise InvalidRequestError(f"The seed has {len(text)} characters; the limit is {MAX_SEED}.")
    return text


def _check_callback(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequestError("The callback URL must be text.")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise InvalidRequestError("The callback URL must be an http(s) URL such as https://example.com/hook, "
                                  f"not {value!r}.")
    if parts.username or parts.password:
        raise InvalidRequestError("The callback URL must not contain a user name or password.")
    return value


_NAME = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\[[^{}\[\]]*\])?\}")


def _environ_like(value: Any) -> bool:
    return value is os.environ or value is getattr(os, "environb", None) or isinstance(value, type(os.environ))


_BRACED = re.compile(r"\{\{|\}\}|\{\s*[A-Za-z_][^{}]*\}")


def unreplaced(text: str) -> list[str]:
    """The `{…}` placeholders `interpolate` leaves as written: ones that start like a name but are not `{name}` or
    `{name.attr}` (`{subject.upper()}`, `{subject!r}`, `{x:>5}`, `{name[0]}`, `{ x }`); JSON and code braces
    that do not start with a name are not counted. Each is named once, in order."""
    found: list[str] = []
    for match in _BRACED.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        plain = _NAME.fullmatch(token)
        if (plain is None or plain.group(2)) and token not in found:
            found.append(token)
    return found


def unreplaced_note(text: str) -> str:
    """One short line naming what `unreplaced` finds ('' if nothing)."""
    left = unreplaced(text)
    if not left:
        return ""
    shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    return f"Left as written: {shown} (only {{name}} and {{name.attr}} are replaced)."


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace `{name}` / `{name.attr}` from `namespace`; `{{` and `}}` are literal braces.

    Any other brace (JSON, code, a lone `{`, `{name[...]}`) is left as it is. An unknown name is an
    InvalidRequestError; so is a placeholder that reaches into the environment (`{os.environ}`,
    `{os.environ[...]}`, a name bound to os.environ) or whose text would hold a key of this process.
    """
    def sub(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        first, *attrs = match.group(1).split(".")
        subscript = match.group(2)
        if first not in namespace:
            if subscript:
                return token
            raise InvalidRequestError(
                f"{{{match.group(1)}}} in the prompt names no variable `{first}`. "
                "Define it first, or write {{ and }} for literal braces.")
        refused = InvalidRequestError(f"{token} in the prompt reaches into the environment or your keys; "
                                      "it is not replaced. Put the text you mean in a variable.")
        value = namespace[first]
        for attr in attrs:
            if _environ_like(value):
                raise refused
            if attr.startswith("_") or not hasattr(value, attr):
                if subscript:
                    return token
                raise InvalidRequestError(f"{{{match.group(1)}}}: `{first}` has no attribute `{attr}`.")
            value = getattr(value, attr)
        if _environ_like(value):
            raise refused
        if subscript:
            return token  # {name[...]} is left as written
        text = str(value)
        if holds_secret(text):
            raise refused
        return text

    return _NAME.sub(sub, text)
