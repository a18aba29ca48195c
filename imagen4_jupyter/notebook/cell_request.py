"""A `%%imagen4` cell as a validated `GenerationRequest`: its parsed flags and body, `{name}` replaced from the
user's variables, the magic's traits where a flag is absent. Every problem is a one-line `UsageError`; nothing
is sent. Imported with the first cell (the request's validation is not needed at `%load_ext`)."""
from __future__ import annotations

from typing import Any, Protocol

from IPython.core.error import UsageError

from ..api import errors as E
from ..api.models import DEFAULT_MODEL, model_spec
from ..api.request import GenerationRequest, interpolate, unreplaced_note
from .options import check_wait_out, split_body


class Host(Protocol):
    """What a request is built from besides the flags: the magic's traits and the user's variables."""

    model: str
    aspect_ratio: str
    num_images: int
    shell: Any


def cell_request(host: Host, args: Any, cell: str) -> GenerationRequest:
    """The request of a cell whose line parsed into `args` and whose body is `cell` (--- then the negative)."""
    check_wait_out(args)
    prompt, negative = split_body(cell)
    if negative is not None and args.negative is not None:
        raise UsageError("Give the negative prompt either below a --- line or with --negative, not both.")
    note = unreplaced_note("\n".join(t for t in (prompt, negative) if t))
    try:
        prompt = interpolate(prompt, host.shell.user_ns)
        fields = request_fields(host, args)
        if negative is not None:
            fields["negative_prompt"] = interpolate(negative, host.shell.user_ns)
        callback_url = args.callback_url
        if callback_url is not None:
            callback_url = interpolate(callback_url, host.shell.user_ns)
        request = GenerationRequest.create(prompt, callback_url=callback_url, **fields)
    except E.InvalidRequestError as err:
        raise UsageError(str(err)) from None
    if note:  # never dropped silently: say what stays as written (the request is still valid)
        views = getattr(host, "views", None)
        if views is not None:
            views.say(note)
        else:
            print(f"[imagen4] {note}", flush=True)
    return request


def request_fields(host: Host, args: Any) -> dict[str, Any]:
    """The request fields of -m, -a, -n, -s and --negative ({name} replaced from the user's variables), the
    host's traits where a flag is absent: a cell's request, or the defaults of `%imagen4 batch` items."""
    ns = host.shell.user_ns

    def interp(value: Any) -> Any:
        return interpolate(value, ns) if isinstance(value, str) else value

    try:
        # -a as given (an explicit -a '' is an error); an unset trait: the model's documented default
        ratio = interp(args.aspect_ratio) if args.aspect_ratio is not None else host.aspect_ratio or None
        fields = {"aspect_ratio": ratio,
                  "num_images": interp(args.num_images) if args.num_images is not None else host.num_images}
        model = model_spec(interp(args.model) if args.model is not None else host.model).name
        if model != DEFAULT_MODEL:  # the default model needs no field (older callers know none)
            fields["model"] = model
        if args.seed is not None:
            fields["seed"] = interp(args.seed)
        if args.negative is not None:
            fields["negative_prompt"] = interp(args.negative)
    except E.InvalidRequestError as err:
        raise UsageError(str(err)) from None
    return fields
