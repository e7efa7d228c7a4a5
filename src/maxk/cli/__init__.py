"""The ``maxk`` command: a thin layer over the Python API (``maxk = "maxk.cli:run"``).

``_app`` holds the click group ``main``, its error handling (bad input -> one line on stderr,
exit code 2) and the shared helpers; each subcommand module imports only from ``_app`` and
registers its commands on ``main``. Importing this package imports them all.
"""

from __future__ import annotations

from . import core, estimate, estimate_bench, prove, wick  # noqa: F401  (each registers its commands on main)
from . import report as _report  # noqa: F401  (maxk report)
from . import surprise as _surprise  # noqa: F401  (maxk surprise)
from . import sweep as _sweep  # noqa: F401  (maxk sweep)
from ._app import main, run

__all__ = ["main", "run"]
