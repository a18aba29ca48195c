"""The request values every Imagen 4 model shares: the aspect ratios and the most images of one task (a module
of its own, like records/policies.py, so that the magic's traits name them at `%load_ext` without building the
models' specs or loading the request's validation; `models.py` has what differs per model)."""

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "3:4", "4:3")
MAX_IMAGES = 4  # ultra makes one (models.ULTRA.max_images)
