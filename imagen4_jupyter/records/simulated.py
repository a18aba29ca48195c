"""Simulated is a fact about the service, not a mode: which tasks of a history were made on a simulator (their
`submitted` event says `"simulated": true` and, since the client learns it from the answers' simulator header,
`"simulator": base URL`), and what becomes of such a task once its simulator is gone.

A simulator ends with the kernel that started it (`%imagen4 simulator`), and any simulator may be stopped. A task
it left unfinished can never be followed again: resuming it would ask a real key and then the real service, which
knows nothing of it. It is closed in the history with one final `failed` event of kind `SimulatorGone` (and
`"simulated": true`): not offered for resume again, and never counted as spending.
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from .entries import TaskEntry
from .history import History

GONE_KIND = "SimulatorGone"  # the `kind` of the final `failed` event of a task whose simulator is gone


def simulated_events(history: History) -> list[dict]:
    """The `submitted` / `reused` events of the history's simulated tasks, oldest first."""
    return [ev for ev in history.iter_events()
            if ev.get("event") in ("submitted", "reused") and ev.get("simulated") is True]


def simulated_ids(history: History) -> set[str]:
    """The ids of the tasks a simulator made (or that were reused from one), in this history."""
    return {ev["task_id"] for ev in simulated_events(history) if isinstance(ev.get("task_id"), str)}


def simulator_urls(history: History) -> dict[str, str]:
    """Task id -> the base URL of the simulator that made it, where the history recorded it."""
    return {ev["task_id"]: ev["simulator"] for ev in simulated_events(history)
            if isinstance(ev.get("task_id"), str) and isinstance(ev.get("simulator"), str)}


class SimulatorMarks:
    """What one session knows of simulated tasks and simulator URLs: loaded from its history once, then kept up to
    date by the tasks it makes (the history may change under it: `relocate`)."""

    def __init__(self) -> None:
        self._history: History | None = None
        self.in_kernel = False  # `%imagen4 simulator` is in use (Session.use_service)
        self.ids: set[str] = set()
        self.urls: set[str] = set()

    def load(self, history: History) -> SimulatorMarks:
        if history is not self._history:
            self._history = history
            self.ids = simulated_ids(history)
            self.urls = set(simulator_urls(history).values())
        return self

    def service(self, client: Any, base_url: Callable[[], str | None]) -> bool:
        """Whether the service in force is a simulator: the in-kernel one; else the client's word once it has had
        an answer (its `simulated`); else whether a simulator at the same base URL (the client's, else
        `base_url()`, the one a client would be made for) made tasks of this history."""
        if self.in_kernel or (client is not None and client.simulated is not None):
            return self.in_kernel or bool(client.simulated)
        return (client.base_url if client is not None else base_url()) in self.urls

    @staticmethod
    def fields(simulated: bool, client: Any) -> dict[str, Any]:
        """What the events of a task made now carry when a simulator makes it: `"simulated": true` and the
        simulator's base URL (so a later kernel knows that URL for a simulator's before it answers)."""
        return {"simulated": True, "simulator": client.base_url} if simulated else {}

    def add(self, task_id: str | None, base_url: str | None) -> None:
        if task_id:
            self.ids.add(task_id)
        if base_url:
            self.urls.add(base_url)


def gone_line(task_id: str, url: str | None, refused: bool) -> str:
    """The one line said when a simulated task cannot be followed: what happened, that it cost nothing."""
    where = f" at {url}" if url else ""
    why = "is no longer running (an in-kernel simulator ends with its kernel)" if refused else \
        "is no longer the service in use, or no longer knows it"
    return (f"Task {task_id} was made on a simulator{where} that {why}: it cannot be finished, nothing was "
            "charged, and it is not resumed again.")


def refuses_connections(url: str | None) -> bool:
    """True when nothing listens at a loopback URL's port any more (a connection is refused at once)."""
    parts = urlsplit(url or "")
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except (OSError, ValueError):
        return False
    return False


def still_followable(session: Any, entry: TaskEntry, url: str | None) -> bool:
    """Whether a simulated task can still be followed: the service in force answers as a simulator at the URL that
    made it (or, where no URL was recorded, is a simulator at all) and knows the task."""
    from ..api import errors as E

    if not session.simulated:
        return False
    client = session.client
    if not client.has_key or (url is not None and client.base_url != url):
        return False
    try:
        client.get_task(entry.task_id, retry=False)
    except E.NotFoundError:
        return False  # a fresh simulator on the same port: 422 "recordInfo is null"
    except E.Imagen4Error:
        return True  # a passing fault: the poller will keep asking
    return True


def settle_gone(session: Any, entries: Iterable[TaskEntry] | None = None) -> tuple[list[TaskEntry], list[str]]:
    """Split unfinished tasks (the history's, or `entries`) into the ones to follow and the simulated ones whose
    simulator is gone; close each of the latter in the history (final `failed`, kind `SimulatorGone`,
    `"simulated": true`) and return (the rest, one line per gone task). No key is asked, nothing is charged."""
    history = session.history
    todo = history.unfinished() if entries is None else list(entries)
    live = {tid for tid, job in session.jobs.items() if not job.done()}
    urls = simulator_urls(history)
    keep, lines = [], []
    for entry in todo:
        if entry.task_id in live or not session.is_simulated(entry.task_id):
            keep.append(entry)
            continue
        url = urls.get(entry.task_id)
        refused = refuses_connections(url)
        if not refused and still_followable(session, entry, url):
            keep.append(entry)
            continue
        line = gone_line(entry.task_id, url, refused)
        event: dict[str, Any] = {"event": "failed", "task_id": entry.task_id, "kind": GONE_KIND, "code": None,
                                 "message": line, "final": True, "simulated": True}
        try:
            history.append(event)
        except OSError:
            pass  # not written: it is offered again next time, and said again
        lines.append(line)
    return keep, lines


def gone_status(session: Any, task_id: str) -> str | None:
    """`%imagen4 status` of a simulated task whose simulator is gone: its one line (None: ask the service)."""
    if not session.is_simulated(task_id):
        return None
    entry = session.history.get(task_id)
    if entry is not None and entry.error is not None and entry.error.get("kind") == GONE_KIND:
        return str(entry.error.get("message") or gone_line(task_id, None, True))
    url = simulator_urls(session.history).get(task_id)
    refused = refuses_connections(url)
    if entry is not None and not refused and still_followable(session, entry, url):
        return None
    if entry is not None and not entry.finished:
        return settle_gone(session, [entry])[1][0]
    where = f" at {url}" if url else ""
    return (f"Task {task_id} was made on a simulator{where} that is no longer running or no longer in use: it "
            f"cannot be asked; %imagen4 show {task_id} shows what the history kept.")
