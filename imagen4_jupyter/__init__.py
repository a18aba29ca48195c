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
    "OutcomeUnknownError", "TimeoutError", "DownloadError", "Panel", "generate_many", "BatchResult",
    "contact_sheet", "prompt_seed_grid", "prompt_ratio_grid", "Grid", "export_history", "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython):  # pragma: no cover - exercised by kernel tests
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .magics import unload

    unload(ipython)


_LAZY = {  # name -> module, imported on first use
    "Panel": "panel", "generate_many": "batch", "BatchResult": "batch", "contact_sheet": "grid",
    "prompt_seed_grid": "grid", "prompt_ratio_grid": "grid", "Grid": "grid", "export_history": "export",
}


def __getattr__(name):
    """`imagen4_jupyter.Panel` imports the panel (and ipywidgets) only when first asked for; batch, grid and
    export helpers are imported on first use too (Pillow only when a grid is drawn, pandas only if asked)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
