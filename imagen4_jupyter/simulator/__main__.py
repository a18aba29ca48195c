"""Command line: ``python -m imagen4_jupyter.simulator [options]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .core import Simulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imagen4_jupyter.simulator",
        description="Serve a local simulator of the Apikley google/imagen4 API.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--key", action="append", dest="keys", metavar="KEY",
                        help="accepted API key (repeatable; default: test-key)")
    parser.add_argument("--any-key", action="store_true", help="accept any non-empty API key")
    parser.add_argument("--queue-time", nargs=2, type=float, default=(1.0, 4.0), metavar=("MIN", "MAX"),
                        help="seconds a task spends waiting/queuing, uniform between MIN and MAX")
    parser.add_argument("--generation-time", nargs=2, type=float, default=(6.0, 12.0), metavar=("MIN", "MAX"),
                        help="seconds a task spends generating, uniform between MIN and MAX")
    parser.add_argument("--image-scale", type=float, default=1.0, help="multiply image dimensions")
    parser.add_argument("--rate-limit", nargs=2, type=float, metavar=("N", "PER_SECONDS"),
                        help="answer code 429 (with Retry-After) beyond N requests per PER_SECONDS, per key; "
                             "off by default")
    parser.add_argument("--credits", type=float, default=1_000_000.0, help="starting balance")
    parser.add_argument("--url-ttl", type=float, default=86400.0, help="seconds result URLs stay valid")
    parser.add_argument("--seed", type=int, default=0, help="random seed for durations")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keys = None if args.any_key else tuple(args.keys or ("test-key",))
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
