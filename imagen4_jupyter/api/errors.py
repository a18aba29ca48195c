"""One exception class per failure kind. Each message says what happened and what to do next.

Messages never contain the API key. `task_id` is set whenever a task is known.

The one place that says what an error means for what comes next:
- `retryable`: asking again may succeed (a status check, a download, a createTask that was certainly not sent);
- `not_sent`: the request certainly never reached the service, so even `createTask` may be sent again;
- `final`: the service's last word on a task (asking again gives the same answer); the history records the
  task as failed rather than as interrupted, and resume leaves it alone.
"""
from __future__ import annotations

from typing import Any


class Imagen4Error(Exception):
    """Base class of every error this package raises."""

    code: int | None = None
    retryable = False
    final_by_kind = False  # every error of this class is the task's last word
    hint = ""

    def __init__(self, message: str = "", *, task_id: str | None = None, code: int | None = None,
                 service_message: str | None = None, retry_after: float | None = None,
                 retryable: bool | None = None, not_sent: bool = False, final: bool | None = None):
        self.task_id = task_id
        if retryable is not None:  # this instance differs from its class (e.g. an expired image URL)
            self.retryable = retryable
        self.not_sent = not_sent
        self.final = self.final_by_kind if final is None else final
        if code is not None:
            self.code = code
        self.service_message = service_message
        self.retry_after = retry_after
        self.detail = message or self.hint
        super().__init__(self._compose())

    def _compose(self) -> str:
        text = self.detail
        if self.service_message:
            text = f"{text} The service said: {self.service_message}{self._said_extra()}"
        if self.task_id:
            text = f"{text} (task {self.task_id})"
        return text

    def _said_extra(self) -> str:
        return ""

    def short(self) -> str:
        """One line for a notebook: the class name in words and the message."""
        return f"{self.title}: {self}"

    @property
    def title(self) -> str:
        return type(self).__name__


class InvalidRequestError(Imagen4Error, ValueError):
    """The request was rejected locally, before anything was sent."""

    title = "Invalid request"


class BudgetExceededError(Imagen4Error):
    """Refused before sending: the request's estimated cost would pass the budget (nothing was sent)."""

    title = "Over budget"
    hint = "The request would pass the budget; raise it (%config Imagen4Magics.budget = N) or send less."


class CancelledError(Imagen4Error):
    """A request withdrawn before it left (an interrupt while it waited for a slot or a retry's pause, or its
    client closed): never sent, and never sent later."""

    final_by_kind = True
    title = "Cancelled"
    hint = "Not sent; no task was created. Submit it again to send it."

    def __init__(self, message: str = "", **kw: Any):
        kw.setdefault("not_sent", True)
        super().__init__(message, **kw)


class RecordError(Imagen4Error):
    """The history could not be written, so the request was not sent (nothing is sent without its record)."""

    final_by_kind = True
    title = "History not writable"

    def __init__(self, message: str = "", **kw: Any):
        kw.setdefault("not_sent", True)
        super().__init__(message, **kw)


class ConfigurationError(Imagen4Error):
    """Missing key, unsafe base URL and similar set-up problems."""

    title = "Configuration problem"


class AuthenticationError(Imagen4Error):
    code = 401
    title = "API key rejected"
    hint = ("The API key is missing or invalid. Set APIKLEY_API_KEY (or pass api_key=...) "
            "to a key from the Apikley key management page.")


class InsufficientCreditsError(Imagen4Error):
    code = 402
    title = "Not enough credits"
    hint = "Your Apikley account does not have enough credits. Top up, then run again."


class NotFoundError(Imagen4Error):
    code = 404
    final_by_kind = True
    title = "Not found"
    hint = "The service does not know this task or endpoint. Check the task id and the base URL."


class ServiceValidationError(Imagen4Error):
    code = 422
    title = "Rejected by the service"
    hint = "The service rejected the request's parameters."


class RateLimitError(Imagen4Error):
    code = 429
    retryable = True
    title = "Rate limited"
    hint = "The service is rate limiting this key. Wait a little and try again, or lower the concurrency."


class MaintenanceError(Imagen4Error):
    code = 455
    retryable = True
    title = "Service under maintenance"
    hint = "The service is under maintenance. Try again later."


class ServerError(Imagen4Error):
    code = 500
    retryable = True
    title = "Server error"
    hint = "The service had an internal error. Try again after a while."


class GenerationFailedError(Imagen4Error):
    code = 501
    final_by_kind = True
    title = "Generation failed"
    hint = "The service could not generate this image. Change the prompt (it may have been filtered) and retry."

    def __init__(self, message: str = "", *, fail_code: str | None = None, **kw):
        self.fail_code = fail_code
        super().__init__(message, **kw)

    def _said_extra(self) -> str:
        return f" (failCode {self.fail_code})" if self.fail_code else ""


class FeatureDisabledError(Imagen4Error):
    code = 505
    title = "Feature disabled"
    hint = "The service has disabled this feature for now. Try again later or contact Apikley support."


class ProtocolError(Imagen4Error):
    title = "Unexpected answer"
    hint = "The service answered in a form this client does not understand."


class TransportError(Imagen4Error):
    """Connection refused, dropped or timed out on a request that is safe to repeat."""

    retryable = True
    title = "Connection problem"
    hint = "Could not reach the service. Check the network and APIKLEY_BASE_URL."


class OutcomeUnknownError(Imagen4Error):
    title = "Outcome unknown"
    hint = ("The task request was sent but no answer came back, so it is unknown whether a task was "
            "created (and billed). It was NOT resent, to avoid paying twice. Check your Apikley "
            "dashboard or `%imagen4 history` before submitting again.")


class Imagen4TimeoutError(Imagen4Error, TimeoutError):
    """Waiting ran out (the task may still finish on the service). Also a builtin `TimeoutError`, so
    `except TimeoutError` (and `concurrent.futures.TimeoutError`) catch it."""

    title = "Timed out"
    hint = ("The task did not finish in time. It may still finish on the service: "
            "`%imagen4 resume` or `client.get_task(task_id)` picks it up later.")


TimeoutError = Imagen4TimeoutError  # noqa: A001 - the old name, kept importable for old code (not in __all__)


class DownloadError(Imagen4Error):
    retryable = True
    title = "Download failed"
    hint = "An image of a finished task could not be downloaded. Resume to try again (URLs expire after ~24 h)."

    def __init__(self, message: str = "", **kw):
        super().__init__(message, **kw)
        if kw.get("final") is None:
            self.final = not self.retryable  # a download that cannot succeed ends the task


BY_CODE: dict[int, type[Imagen4Error]] = {
    cls.code: cls
    for cls in (AuthenticationError, InsufficientCreditsError, NotFoundError, ServiceValidationError,
                RateLimitError, MaintenanceError, ServerError, GenerationFailedError, FeatureDisabledError)
}


def error_for_code(code: int, service_message: str | None = None, *, task_id: str | None = None,
                   retry_after: float | None = None) -> Imagen4Error:
    """The exception for a non-200 body `code` (unknown codes: 5xx as ServerError, others ProtocolError)."""
    cls = BY_CODE.get(code)
    if cls is None:
        if 500 <= code < 600:
            cls = ServerError
        else:
            return ProtocolError(f"The service answered with unknown code {code}.", task_id=task_id, code=code,
                                 service_message=service_message)
    return cls(task_id=task_id, code=code, service_message=service_message, retry_after=retry_after)
