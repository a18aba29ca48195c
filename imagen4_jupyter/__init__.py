"""Google Imagen 4 (through Apikley's task API) in Jupyter.

`%load_ext imagen4_jupyter` for the `%%imagen4` magic; `Imagen4Client` works anywhere.
Nothing here does I/O at import time, and ipywidgets is imported only when the panel is used.

The layers, lowest first (a module imports only from its own layer or lower ones; docs/architecture.md):
  api/        plain Python: requests, the client, jobs, polling, the image store (no IPython)
  records/    what lasts: the per-notebook history, the session over it, export
  research/   batches, their results, grids and contact sheets
  notebook/   IPython and ipywidgets front-ends: the magic, its subcommands, cell views, the panel
  simulator/  the independent counterpart of the service (imports nothing from the others)
"""
from .api.errors import (
    AuthenticationError,
    BudgetExceededError,
    CancelledError,
    ConfigurationError,
    DownloadError,
    FeatureDisabledError,
    GenerationFailedError,
    Imagen4Error,
    Imagen4TimeoutError,
    InsufficientCreditsError,
    InvalidRequestError,
    MaintenanceError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    RateLimitError,
    RecordError,
    ServerError,
    ServiceValidationError,
    TimeoutError,  # noqa: F401 - the old name of Imagen4TimeoutError, importable but not in __all__
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "Imagen4Client", "RetryPolicy", "PollSchedule", "GenerationRequest", "Job", "Result", "TaskRecord",
    "StoredImage", "Imagen4Error", "InvalidRequestError", "ConfigurationError", "AuthenticationError",
    "InsufficientCreditsError", "BudgetExceededError", "NotFoundError", "ServiceValidationError", "RateLimitError",
    "MaintenanceError",
    "ServerError", "GenerationFailedError", "FeatureDisabledError", "ProtocolError", "TransportError",
    "OutcomeUnknownError", "CancelledError", "RecordError", "Imagen4TimeoutError", "DownloadError",
    "Panel", "generate_many", "BatchResult",
    "contact_sheet", "prompt_seed_grid", "prompt_ratio_grid", "Grid", "grid", "GridSet", "export_history",
    "export_dataset", "history_frame", "get_session", "cell_code",
    "load_ipython_extension",
    "unload_ipython_extension",
    "read_provenance",
]


def load_ipython_extension(ipython):  # pragma: no cover - exercised by kernel tests
    from .notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover
    from .notebook.magics import unload

    unload(ipython)


_LAZY = {  # name -> module, imported on first use (so %load_ext loads no client, requests or Pillow)
    "Imagen4Client": "api.client", "RetryPolicy": "api.schedules", "Job": "api.job", "Result": "api.task",
    "TaskRecord": "api.task", "GenerationRequest": "api.request", "PollSchedule": "api.schedules",
    "StoredImage": "api.store", "Panel": "notebook.panel", "cell_code": "notebook.panel",
    "generate_many": "research.batch",
    "BatchResult": "research.results", "contact_sheet": "research.grids", "prompt_seed_grid": "research.grids",
    "prompt_ratio_grid": "research.grids", "Grid": "research.grids", "export_history": "records.export",
    "grid": "research.experiments", "GridSet": "research.experiments", "export_dataset": "research.dataset",
    "history_frame": "records.export",
    "get_session": "records.session", "read_provenance": "api.provenance",
}


def __getattr__(name):
    """`imagen4_jupyter.Imagen4Client` imports the client (and requests) only when first asked for, `Panel` the
    panel (and ipywidgets); batch, grid and export helpers are imported on first use too (Pillow only when a grid
    is drawn, pandas only if asked)."""
    if name in _LAZY:
        import importlib

        value = globals()[name] = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
