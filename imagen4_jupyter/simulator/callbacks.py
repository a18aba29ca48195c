"""Callbacks (apikley.md section 9): POST the finished task to ``callBackUrl``, optionally signed.

The body is the recordInfo envelope (``code`` 200 on success, 501 with ``failMsg`` on failure), with
``consumeCredits`` and ``remainedCredits`` added to ``data``. With a webhook key each POST carries
``X-Webhook-Timestamp`` (Unix seconds) and ``X-Webhook-Signature`` = base64(HMAC-SHA256(key,
taskId + "." + timestamp)). :meth:`Callbacks.post` also sends forged ones for tests (see FORGERIES).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, NamedTuple

TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
#: Kinds of forged callback :meth:`Callbacks.post` can send.
FORGERIES = ("unsigned", "bad_signature", "stale", "wrong_task", "replay")
#: How old a "stale" callback's (validly signed) timestamp is, in seconds.
STALE_AGE = 3600


class Delivery(NamedTuple):
    """One callback POST: where, what, the receiver's HTTP status (or the error text), the headers sent,
    and which forgery it was (None: genuine)."""

    url: str
    payload: dict[str, Any]
    status: int | str
    headers: dict[str, str]
    forge: str | None = None


def sign(key: str, task_id: str, timestamp: int | str) -> str:
    """The documented signature: base64 of HMAC-SHA256(key, f"{task_id}.{timestamp}")."""
    digest = hmac.new(key.encode("utf-8"), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def envelope_for(data: dict[str, Any]) -> dict[str, Any]:
    """The callback body for a finished task's ``data``."""
    if data.get("state") == "success":
        return {"code": 200, "msg": "Image generated successfully.", "data": data}
    return {"code": 501, "msg": data.get("failMsg") or "Generation failed", "data": data}


#: Builds (callBackUrl, body) for a task id when it is due; None to skip.
Prepare = Callable[[str], tuple[str, dict[str, Any]] | None]


class Callbacks:
    """Schedules callback POSTs at tasks' completion times and records every delivery."""

    def __init__(self, prepare: Prepare, timeout: float = 5.0, webhook_key: str | None = None) -> None:
        self.prepare = prepare
        self.timeout = timeout
        self.webhook_key = webhook_key
        self._cv = threading.Condition()
        self._schedule: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._deliveries: list[Delivery] = []
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cv:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="apikley-sim-cb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2)

    def schedule(self, task_id: str, due_mono: float) -> None:
        with self._cv:
            heapq.heappush(self._schedule, (due_mono, next(self._seq), task_id))
            self._cv.notify_all()

    @property
    def deliveries(self) -> list[Delivery]:
        with self._cv:
            return list(self._deliveries)

    def _run(self) -> None:
        with self._cv:
            while not self._stopping:
                if not self._schedule:
                    self._cv.wait()
                    continue
                due, _, task_id = self._schedule[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._cv.wait(delay)
                    continue
                heapq.heappop(self._schedule)
                threading.Thread(target=self._deliver, args=(task_id,), name="apikley-sim-post", daemon=True).start()

    def _deliver(self, task_id: str) -> None:
        prepared = self.prepare(task_id)
        if prepared is not None:
            self.post(*prepared)

    def headers_for(self, task_id: str, forge: str | None = None) -> dict[str, str]:
        """Signature headers for ``task_id`` now (none without a webhook key), forged as asked."""
        key = self.webhook_key
        if key is None or forge == "unsigned":
            return {}
        stamp = int(time.time()) - (STALE_AGE if forge == "stale" else 0)
        if forge == "bad_signature":
            key = key + "-forged"
        signed_id = task_id + "-other" if forge == "wrong_task" else task_id
        return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(key, signed_id, stamp)}

    def post(self, url: str, payload: dict[str, Any], forge: str | None = None) -> Delivery:
        """POST ``payload`` to ``url`` now and record it. ``forge``: one of FORGERIES or None (genuine).

        "replay" sends the task's last genuine delivery again, same body, old headers included.
        """
        if forge is not None and forge not in FORGERIES:
            raise ValueError(f"forge must be None or one of {FORGERIES}")
        task_id = str(payload.get("data", {}).get("taskId", ""))
        headers = self.headers_for(task_id, forge)
        if forge == "replay":
            earlier = [d for d in self.deliveries
                       if d.forge is None and d.payload.get("data", {}).get("taskId") == task_id]
            if not earlier:
                raise ValueError(f"no earlier callback of {task_id} to replay")
            url, payload, headers = earlier[-1].url, earlier[-1].payload, earlier[-1].headers
        request = urllib.request.Request(
            url,
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "Apikley-Callback/1.0", **headers},
            method="POST",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        result: int | str
        try:
            with opener.open(request, timeout=self.timeout) as response:
                result = response.status
        except urllib.error.HTTPError as exc:
            result = exc.code
        except Exception as exc:  # noqa: BLE001 - callbacks must never break the simulator
            result = f"{type(exc).__name__}: {exc}"
        delivery = Delivery(url, payload, result, headers, forge)
        with self._cv:
            self._deliveries.append(delivery)
        return delivery
