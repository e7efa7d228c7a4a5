"""``maxk report``: a sweep's runs/ directory as one self-contained HTML page (docs/report.md).

``runs`` reads the layout ``maxk sweep`` writes; ``tables`` computes the numbers; ``figures`` and
``model_figures`` draw them (PNG ``data:`` URIs); ``sections`` and ``html`` assemble the page;
``build.report`` writes it atomically.
"""

from .build import render, report
from .runs import Runs, SeedRun, load_runs

__all__ = ["Runs", "SeedRun", "load_runs", "render", "report"]
