"""Command line: ``python -m imagen4_jupyter.simulator [options]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .core import Simulator
from .limits import CREATE_LIMIT, QUERY_LIMIT
from .links import DEFAULT_LINK_TTL, DEFAULT_RETENTION, EXPIRED_STATUSES
from .models import GENERATION_TIME, MODELS, QUEUE_TIME, default_prices


def _speeds() -> str:
    return ", ".join(f"{name.split('/')[-1]} {spec.speed:g}x" for name, spec in MODELS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imagen4_jupyter.simulator",
        description="Serve a local simulator of the Apikley Imagen 4 API (google/imagen4, -fast, -ultra).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--key", action="append", dest="keys", metavar="KEY",
                        help="accepted API key (repeatable; default: test-key)")
    parser.add_argument("--any-key", action="store_true", help="accept any non-empty API key")
    parser.add_argument("--queue-time", nargs=2, type=float, default=QUEUE_TIME, metavar=("MIN", "MAX"),
                        help="seconds a task spends waiting/queuing, uniform between MIN and MAX (every model)")
    parser.add_argument("--generation-time", nargs=2, type=float, default=GENERATION_TIME, metavar=("MIN", "MAX"),
                        help="seconds the standard model spends generating, uniform between MIN and MAX; other "
                             "models take it times their speed (" + _speeds() + ")")
    parser.add_argument("--time-scale", type=float, default=1.0, metavar="FACTOR",
                        help="multiply every task duration (queue and generation), e.g. 0.1 for tasks ten times "
                             "quicker with the same shape")
    parser.add_argument("--image-scale", type=float, default=1.0, help="multiply image dimensions")
    parser.add_argument("--rate-limit", nargs=2, type=float, metavar=("N", "PER_SECONDS"),
                        help="answer code 429 (with Retry-After) beyond N requests per PER_SECONDS, per key; "
                             "off by default")
    parser.add_argument("--no-limits", action="store_true",
                        help="switch off the documented limits (--create-limit, --query-limit)")
    parser.add_argument("--create-limit", nargs=2, type=float, default=CREATE_LIMIT, metavar=("N", "SECONDS"),
                        help="at most N createTask per SECONDS for the account, else body code 429 (not queued)")
    parser.add_argument("--query-limit", nargs=2, type=float, default=QUERY_LIMIT, metavar=("N", "SECONDS"),
                        help="at most N recordInfo per SECONDS per key, else body code 429")
    parser.add_argument("--credits", type=float, default=1_000_000.0, help="starting balance")
    parser.add_argument("--price", nargs=2, action="append", metavar=("MODEL", "CREDITS"),
                        help="credits per task of MODEL (repeatable; default: 4 fast, 6 standard, 12 ultra)")
    parser.add_argument("--cost-per-image", type=float, metavar="CREDITS",
                        help="charge CREDITS per image for every model instead of the per-task prices")
    parser.add_argument("--url-ttl", type=float, default=86400.0, metavar="SECONDS",
                        help="seconds result URLs stay valid")
    parser.add_argument("--link-ttl", type=float, default=DEFAULT_LINK_TTL, metavar="SECONDS",
                        help="seconds a fresh link from /api/v1/common/download-url stays valid")
    parser.add_argument("--retention", type=float, default=DEFAULT_RETENTION, metavar="SECONDS",
                        help="seconds the media is kept after a task finishes (fresh links work until then)")
    parser.add_argument("--expired-status", type=int, choices=EXPIRED_STATUSES, default=404,
                        help="HTTP status of an expired result URL or link")
    parser.add_argument("--no-download-url", action="store_true",
                        help="leave out /api/v1/common/download-url (it answers 404, as on some resellers)")
    parser.add_argument("--auth-http-status", type=int, choices=(200, 401), default=200,
                        help="HTTP status of a body-code-401 answer (200 as the live service does)")
    parser.add_argument("--unknown-task-code", type=int, choices=(422, 404), default=422,
                        help="body code for an unknown taskId (422 'recordInfo is null' as the live service does)")
    parser.add_argument("--quirk-500-on-missing-field", action="store_true",
                        help="answer a createTask missing a required field with code 500 'This field is required'")
    parser.add_argument("--webhook-key", metavar="KEY", help="sign callbacks with this webhook HMAC key")
    parser.add_argument("--seed", type=int, default=0, help="random seed for durations")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.time_scale < 0:
        build_parser().error("--time-scale: must be 0 or more (1 = real time)")
    keys = None if args.any_key else tuple(args.keys or ("test-key",))
    prices = default_prices()
    for model, credits in args.price or ():
        if model not in MODELS:
            build_parser().error(f"--price: unknown model {model!r} (one of {', '.join(MODELS)})")
        prices[model] = float(credits)
    sim = Simulator(
        port=args.port,
        api_keys=keys,
        queue_time=tuple(args.queue_time),
        generation_time=tuple(args.generation_time),
        image_scale=args.image_scale,
        url_ttl=args.url_ttl,
        credits=args.credits,
        rate_limit=tuple(args.rate_limit) if args.rate_limit else None,
        random_seed=args.seed,
        cost_per_image=args.cost_per_image,
        enforce_limits=not args.no_limits,
        create_limit=tuple(args.create_limit),
        query_limit=tuple(args.query_limit),
        prices=prices,
        auth_http_status=args.auth_http_status,
        unknown_task_code=args.unknown_task_code,
        quirk_500_on_missing_field=args.quirk_500_on_missing_field,
        link_ttl=args.link_ttl,
        retention=args.retention,
        expired_status=args.expired_status,
        download_url_enabled=not args.no_download_url,
        webhook_key=args.webhook_key,
        time_scale=args.time_scale,
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with sim:
        shown = "any non-empty key" if keys is None else ", ".join(keys)
        print(f"Apikley simulator listening on {sim.url} (key: {shown})", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
