"""Google Imagen 4 (through Apikley's task API) in Jupyter.

`%load_ext imagen4_jupyter` for the `%%imagen4` magic; `Imagen4Client` works anywhere.
Nothing here does I/O at import time, and ipywidgets is imported only when the panel is used.
"""
from .client import Imagen4Client, RetryPolicy
from .errors import (
    AuthenticationError,
    ConfigurationError,
    DownloadError,
    FeatureDisabledError,
    GenerationFailedError,
    Imagen4Error,
    InsufficientCreditsError,
    InvalidRequestError,
    MaintenanceError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    RateLimitError,
    ServerError,
    ServiceValidationError,
    TimeoutError,
    TransportError,
)
from .images import StoredImage
from .poller import PollSchedule
from .request import GenerationRequest
from .task import Job, Result, TaskRecord

__version__ = "0.1.0"

__all__ = [
    "Imagen4Client", "RetryPolicy", "PollSchedule", "GenerationRequest", "Job", "Result", "TaskRecord",
    "StoredImage", "Imagen4Error", "InvalidRequestError", "ConfigurationError", "AuthenticationError",
    "InsufficientCreditsError", "NotFoundError", "ServiceValidationError", "RateLimitError", "MaintenanceError",
    "ServerError", "GenerationFailedError", "FeatureDisabledError", "ProtocolError", "TransportError",
    "OutcomeUnknownError", "TimeoutError", "DownloadError", "Panel", "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython):  # pragma: no cover - exercised by kernel tests
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .magics import unload

    unload(ipython)


def __getattr__(name):
    """`imagen4_jupyter.Panel` imports the panel (and ipywidgets) only when first asked for."""
    if name == "Panel":
        from .panel import Panel

        return Panel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
