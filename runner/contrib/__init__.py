"""Extras for projects that use runner: test helpers (``runner.contrib.testing``) and a pytest
plugin (``runner.contrib.pytest``), as Celery's ``celery.contrib``."""
