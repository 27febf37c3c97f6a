"""``runner beat``: periodic task and pipeline fires, one leader at a time (see scheduler)."""
