"""runner's configuration: the settings model, ``app.conf`` and its loaders, validation.

See :mod:`runner.config.conf` for the layers and their precedence.
"""

from __future__ import annotations

from runner.config.check import check_module, summary
from runner.config.conf import Conf
from runner.config.settings import Settings
from runner.config.urls import URL, mask_url, parse_url

__all__ = ["URL", "Conf", "Settings", "check_module", "mask_url", "parse_url", "summary"]
