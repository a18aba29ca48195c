"""Local, faithful simulator of the Apikley ``google/imagen4`` task API.

Real HTTP on 127.0.0.1 (``http.server.ThreadingHTTPServer``), independent of
the rest of :mod:`imagen4_jupyter`::

    from imagen4_jupyter.simulator import Simulator

    with Simulator(generation_time=(0.05, 0.05), image_scale=0.0625) as sim:
        ...  # point a client at sim.url with key sim.api_key

Endpoints: ``POST /api/v1/jobs/createTask`` (strict OpenAPI validation,
``num_images`` must be a string), ``GET /api/v1/jobs/recordInfo?taskId=``
(envelope spelled ``message``; ``param`` and ``resultJson`` are JSON encoded
as strings), ``GET /api/v1/chat/credit``, and the result images under
``/files/<token>/<i>.png`` (no auth; 404 once ``url_ttl`` has passed).

Differences from the real service worth knowing:

* Missing or wrong API keys answer **HTTP 401** with body ``{"code": 401}``.
  The real service may answer HTTP 200 with body code 401 instead, so a
  client must always read the body ``code`` rather than the HTTP status.
* Credits are billed when a task is created (``cost_per_image`` per image)
  and are not refunded when a task fails.
* Callbacks carry body code 200 on success and 501 (with ``failMsg``) on
  failure.

Scripting: ``sim.next_outcomes`` (per-task overrides), ``sim.inject(...)``
(faults), ``sim.requests`` / ``sim.count()`` (recording), ``sim.callbacks``.
"""

from .core import Simulator
from .faults import Fault
from .state import FAIL, GENERATING, QUEUING, SUCCESS, WAITING, Recorded, SimTask

__all__ = [
    "FAIL",
    "GENERATING",
    "QUEUING",
    "SUCCESS",
    "WAITING",
    "Fault",
    "Recorded",
    "SimTask",
    "Simulator",
]
