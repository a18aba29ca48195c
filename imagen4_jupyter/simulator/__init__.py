"""Local, faithful simulator of Apikley's Imagen 4 task API (``google/imagen4``, ``-fast``, ``-ultra``).

Real HTTP on 127.0.0.1 (``http.server.ThreadingHTTPServer``), independent of the rest of
:mod:`imagen4_jupyter` (it imports nothing from the client side)::

    from imagen4_jupyter.simulator import Simulator

    with Simulator(time_scale=0.01, image_scale=0.0625) as sim:  # real durations, a hundredth of the time
        ...  # point a client at sim.url with key sim.api_key

Endpoints: ``POST /api/v1/jobs/createTask`` (strict per-model schema validation, code 422 on a break),
``GET /api/v1/jobs/recordInfo?taskId=`` (envelope spelled ``message``; ``param`` and ``resultJson`` are
JSON encoded as strings), ``GET /api/v1/chat/credit``, ``POST /api/v1/common/download-url`` (fresh
links), the result images under ``/files/<token>/<i>.png`` and fresh links under ``/dl/<token>.png``.

By default it behaves as the live service is documented and observed to: 20 createTask per 10 s per
account and 10 recordInfo per second per key (else body code 429; ``enforce_limits=False`` for speed),
HTTP 200 with body code 401 for a bad key, ``{"code": 422, "msg": "recordInfo is null"}`` for an unknown
task, HTTP 400 for recordInfo without ``taskId``, per-task prices of 4 / 6 / 12 credits (fast / standard
/ ultra). docs/simulator.md lists every option.

Scripting: ``sim.next_outcomes`` (per-task overrides), ``sim.inject(...)`` (faults), ``sim.requests`` /
``sim.count()`` / ``sim.max_in_window()`` / ``sim.count_429()`` (recording), ``sim.callbacks`` /
``sim.deliveries`` / ``sim.send_callback()`` (callbacks), ``sim.charges`` (the ledger).
"""

from .billing import Charge
from .callbacks import Delivery, sign
from .core import Simulator
from .faults import Fault
from .models import MODELS, ModelSpec
from .state import FAIL, GENERATING, QUEUING, SUCCESS, WAITING, Recorded, SimTask

__all__ = [
    "FAIL",
    "GENERATING",
    "MODELS",
    "QUEUING",
    "SUCCESS",
    "WAITING",
    "Charge",
    "Delivery",
    "Fault",
    "ModelSpec",
    "Recorded",
    "SimTask",
    "Simulator",
    "sign",
]
