"""The session's clients: what one was built for (a hash of the key, never the key) and closing a replaced one
once the jobs it still follows are done."""
from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client (and requests) load with the first task, not with %load_ext
    from ..api.client import Imagen4Client
    from ..api.job import Job


def client_fingerprint(key: str, base_url: str | None) -> tuple[str, str | None]:
    """What a client was built for, without keeping another copy of the key: its hash and the base URL."""
    return hashlib.sha256((key or "").encode()).hexdigest(), base_url


def close_when_done(client: Imagen4Client, jobs: list[Job]) -> None:
    """Close a replaced client once the jobs it still follows are done (they keep its poller until then)."""
    left = {id(j) for j in jobs}
    lock = threading.Lock()

    def close() -> None:
        threading.Thread(target=client.close, name="imagen4-close-client", daemon=True).start()  # not the poller's

    def one_done(job: Job) -> None:
        with lock:
            left.discard(id(job))
            last = not left
        if last:
            close()

    if not left:
        close()
    for job in jobs:
        job.add_done_callback(one_done)
