"""What the history records of requests that waited in the local send queue, and what resume does with them.

Events (each with the request's `local_id`): `queued` (with the request, the process id and host, and `owner`,
the name of the kernel's lease (records/lease.py): nothing sent yet; written before the request is accepted, or
it is refused), `sending` (written before the request leaves, or
it does not leave: from here on it may reach the service), then `submitted` (it has a task id),
`outcome_unknown`, `not_sent` or `cancelled` (withdrawn while it waited: never sent, never sent later).
After a crash, `%imagen4 resume` sends again what was certainly never sent (`queued` without `sending`) once its
owner's lease has lapsed (a live kernel, here or on another machine sharing the folder, sends its own queue;
in doubt nothing is sent and resume says so), and reports as outcome unknown what may have been (`sending`
without an end): nothing is sent twice.
"""
from __future__ import annotations

import warnings
from typing import Any, Protocol

from ..api import errors as E
from ..api.job import Job, Ledger
from ..api.request import GenerationRequest
from .history import History
from .lease import held_line, hold_lease, owner_state
from .location import warn_unwritable


class Resubmitter(Protocol):
    """What resume needs of a session (records/session.Session is one)."""

    history: History
    queued: dict[str, Job]

    def submit(self, request: GenerationRequest, *, force: bool = ..., source: str = ..., cell: Any = ...,
               local_id: str | None = ...) -> Job: ...


NOT_RECORDED = {  # what a step that could not be written means (a crash then loses what it would have said),
    # by the stage of the request's life (api/job.py) or the event
    "queued": "A request waiting again after a 429 is not recorded as waiting",
    "outcome_unknown": "The outcome of this createTask is not recorded",
    "not_sent": "A request that created nothing is not recorded as such",
    "cancelled": "A request withdrawn before it was sent is not recorded as such"}


def _write(history: History, event: dict) -> None:
    try:
        history.append(event)
    except OSError as err:
        warn_unwritable(history.path, err, NOT_RECORDED.get(event["event"], f"A step ({event['event']}) is "
                                                            "not recorded"))


def owner_fields(history: History) -> dict:
    """The `owner` of this process's queued requests in this history's folder: its lease's name, or {} when the
    lease cannot be written (such a request is then never sent by another kernel's resume; the caller says so
    once its own record is written, so a history that cannot be written at all is said once, not twice)."""
    try:
        return {"owner": hold_lease(history.folder).name}
    except OSError:
        return {}


def resume_queue(session: Resubmitter, held: list[dict] | None = None) -> list[Job]:
    """Requests a dead kernel left in its send queue: those certainly never sent are sent now, if their owner's
    lease has lapsed (records/lease.py); those that may have been come back as jobs already failed with an
    OutcomeUnknownError (and the history says so). Requests whose owner may still live are left to it: added to
    `held` if given, else named in one warning."""
    jobs = []
    left_alone: list[dict] = []
    for event in session.history.waiting():
        local_id = event.get("local_id")
        if not isinstance(local_id, str) or local_id in session.queued:
            continue  # this kernel's own queue
        state = owner_state(event, session.history.folder)
        if state == "mine" or (state == "alive" and event.get("sending")):
            continue  # this process's, or being sent by a live kernel that records its outcome itself
        if state != "lapsed" and not event.get("sending"):
            left_alone.append(event)  # another kernel's, alive or in doubt: it may still send it
            continue
        try:
            request = GenerationRequest.from_dict(event.get("request") or {})
        except E.InvalidRequestError:
            continue
        if event.get("sending"):  # it may have reached the service: never sent again
            record = {"event": "outcome_unknown", "local_id": local_id, "request": event.get("request"),
                      "request_key": event.get("request_key"), "cell": event.get("cell"),
                      "source": event.get("source"),
                      **({"batch": event["batch"]} if isinstance(event.get("batch"), dict) else {}),  # its batch's
                      "message": "The kernel stopped while this createTask was being sent, so it is unknown "
                                 "whether a task was created. " + E.OutcomeUnknownError.hint}
            _write(session.history, record)
            job = Job(None, request, local_id=local_id)  # its life ended with the dead kernel: only said here
            Ledger().move(job, "outcome_unknown", error=E.OutcomeUnknownError(record["message"]))
            jobs.append(job)
            continue
        jobs.append(session.submit(request, force=True, source=str(event.get("source") or "resume"),
                                   cell=event.get("cell"), local_id=local_id))
    if held is not None:
        held.extend(left_alone)
    elif left_alone:
        warnings.warn("imagen4: " + held_line(left_alone), RuntimeWarning, stacklevel=3)
    return jobs


def resume_summary(jobs: list[Job]) -> str:
    """What `%imagen4 resume` did, in one line: tasks followed again (nothing created), requests a stopped
    kernel never sent (sent now: new tasks), and requests that may have been sent (outcome unknown)."""
    followed = sum(1 for j in jobs if not j.local_id)
    unknown = sum(1 for j in jobs if j.local_id and isinstance(j.error, E.OutcomeUnknownError))
    sent = len(jobs) - followed - unknown
    parts = [f"Resuming {followed} unfinished task(s); no new task is created for them."] if followed else []
    if sent:
        parts.append(f"{sent} request(s) a stopped kernel had not sent yet: sent now (new tasks).")
    if unknown:
        parts.append(f"{unknown} request(s) may have reached the service before the kernel stopped: outcome "
                     "unknown, not sent again.")
    return " ".join(parts)
