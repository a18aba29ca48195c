"""When a stored result stands in for a new task: the reuse policies (a module of its own so that the magic's
traits name them without loading the session)."""

REUSE_POLICIES = ("seeded", "always", "never")
