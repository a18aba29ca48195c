"""The Imagen 4 family as the service documents it (apikley.md section 6): one row per ``model``.

All three models share the createTask / recordInfo endpoints and differ in their ``input`` schema:

========================  =============  ==============  =====================  =======  ========
model                     default ratio  ``num_images``  ``seed``               speed    credits
========================  =============  ==============  =====================  =======  ========
``google/imagen4``        ``1:1``        ``"1"``-``"4"``  string, <= 500 chars   1.0      6
``google/imagen4-fast``   ``16:9``       ``"1"``-``"4"``  integer                0.5      4
``google/imagen4-ultra``  ``1:1``        absent (one)    string, <= 500 chars   1.6      12
========================  =============  ==============  =====================  =======  ========

*speed* multiplies the sampled generation time; the queue time is the reseller's and the same for all
models. Defaults (:data:`QUEUE_TIME`, :data:`GENERATION_TIME`, seconds, uniform): 1-4 s in the queue, then
6-12 s generating for the standard model, so 3-6 s for fast and 9.6-19.2 s for ultra. Neither Google nor the
service publishes latencies; the figures are estimates from third-party measurements and guides, listed
with their sources in docs/simulator.md ("Task durations"). ``Simulator(time_scale=...)`` multiplies them all.
*credits* are the upstream price list's per-task charges (section 6); ``Simulator(prices=...)``
changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "google/imagen4"
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "3:4", "4:3")
NUM_IMAGES = ("1", "2", "3", "4")
MAX_PROMPT = 5000
MAX_SEED = 500

#: Seconds a task waits in the service's queue (``waiting`` then ``queuing``), uniform between the two; the
#: same for every model. The default of ``Simulator(queue_time=)`` and ``--queue-time``.
QUEUE_TIME: tuple[float, float] = (1.0, 4.0)
#: Seconds the standard model spends ``generating``, uniform between the two; each model's ``speed``
#: multiplies the sample. The default of ``Simulator(generation_time=)`` and ``--generation-time``.
GENERATION_TIME: tuple[float, float] = (6.0, 12.0)


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts and how the simulator runs it."""

    name: str
    default_aspect_ratio: str
    has_num_images: bool
    #: JSON type of ``input.seed``: "string" (at most MAX_SEED characters) or "integer".
    seed_type: str
    #: Factor applied to the sampled generation time.
    speed: float
    #: Default credits charged per task.
    credits: float

    @property
    def input_fields(self) -> tuple[str, ...]:
        """The ``input`` fields this model's schema allows."""
        base = ("prompt", "negative_prompt", "aspect_ratio")
        return (*base, "num_images", "seed") if self.has_num_images else (*base, "seed")


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("google/imagen4", "1:1", True, "string", 1.0, 6.0),
        ModelSpec("google/imagen4-fast", "16:9", True, "integer", 0.5, 4.0),
        ModelSpec("google/imagen4-ultra", "1:1", False, "string", 1.6, 12.0),
    )
}


def default_prices() -> dict[str, float]:
    """Credits per task by model (a fresh dict, safe to change)."""
    return {name: spec.credits for name, spec in MODELS.items()}
