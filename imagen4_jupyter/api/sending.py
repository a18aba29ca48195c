"""The local send queue: a createTask that must wait for a slot under the account's create limit waits here,
in the poller's pool, so the cell (or panel) that asked returns at once.

A queued job has no task id yet (`job.task_id is None`, `job.status == "pacing"`, `job.send_at` the time its
slot is due, `job.local_id` naming the request). The hooks let the caller record each step before the next one
happens: `queued` (nothing sent), `sending` (the request may reach the service from now on), then exactly one
of `created` (the task exists; before polling starts), `unknown` (sent, no answer: never resent) or `not_sent`
(the service certainly created nothing). A kernel that dies in between leaves the history saying which.
"""
from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import errors as E
from .job import Job
from .request import GenerationRequest

log = logging.getLogger("imagen4_jupyter")


def new_local_id() -> str:
    return "local-" + secrets.token_hex(8)


@dataclass
class SendHooks:
    """Callbacks for each step of a createTask (any may be None). They run in the thread that sends."""

    created: Callable[[Job], Any] | None = None
    queued: Callable[[Job], Any] | None = None
    sending: Callable[[Job], Any] | None = None
    unknown: Callable[[Job, E.OutcomeUnknownError], Any] | None = None
    not_sent: Callable[[Job, E.Imagen4Error], Any] | None = None


def _run(hook: Callable[..., Any] | None, *args: Any) -> None:
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:  # recording failed (a full disk, say): the request still goes on
        log.exception("send hook failed")


def send_now(create: Callable[..., str], job: Job, hooks: SendHooks, **options: Any) -> str:
    """Send the job's createTask, its steps heard by `hooks`: `sending` before anything leaves (a kernel that dies
    during the request leaves it in the history as maybe sent), `queued` while a retry waits after an answer
    that created nothing (a 429: a kernel that dies then leaves it as never sent), `sending` again before the
    retry, then `unknown` or `not_sent` before the error is raised. Returns the task id (the caller assigns it
    and runs `created`)."""
    assert job.request is not None
    _run(hooks.sending, job)

    def step(what: str) -> None:  # a retry after an answer that created nothing (a 429): waiting, then sent
        _run(hooks.queued if what == "waiting" else hooks.sending, job)

    try:
        return create(job.request, on_step=step, **options)
    except E.OutcomeUnknownError as err:
        _run(hooks.unknown, job, err)
        raise
    except E.Imagen4Error as err:
        _run(hooks.not_sent, job, err)
        raise
    except Exception as exc:  # a bug after sending: the task may exist, so it is never resent
        err = E.OutcomeUnknownError(f"Unexpected error while sending the task ({exc!r}). "
                                    + E.OutcomeUnknownError.hint)
        _run(hooks.unknown, job, err)
        raise err from exc


class SendQueue:
    """createTask requests waiting for a slot, sent by the poller's workers when their slot is due."""

    def __init__(self, create: Callable[..., str], *, reserve: Callable[[], float],
                 later: Callable[[float, Callable[[], None]], None], follow: Callable[[Job], None]):
        self.create, self.reserve, self.later, self.follow = create, reserve, later, follow

    def enqueue(self, request: GenerationRequest, hooks: SendHooks, *, retry_rate_limits: bool = True,
                local_id: str | None = None) -> Job:
        job = Job(None, request)
        job.local_id = local_id or new_local_id()
        job.status = "pacing"
        _run(hooks.queued, job)  # in the history before anything is sent
        delay = self.reserve()
        job.send_at = time.time() + delay
        self.later(delay, lambda: self.send(job, hooks, retry_rate_limits))
        return job

    def send(self, job: Job, hooks: SendHooks, retry_rate_limits: bool) -> None:
        try:
            task_id = send_now(self.create, job, hooks, retry_rate_limits=retry_rate_limits, slot_taken=True)
        except E.Imagen4Error as err:
            job.settle(error=err)
            return
        job.assign(task_id)
        try:
            _run(hooks.created, job)
        finally:  # a paid task is followed even if recording it failed
            self.follow(job)
