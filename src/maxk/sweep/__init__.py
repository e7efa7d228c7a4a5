"""Sweeps over seeds and configurations (DESIGN §9): per seed train, evaluate, every proof and
estimator, and one record on disk; in this process or on a Dask cluster. docs/sweep.md.

Modules, one idea each: ``plan`` (the jobs and the options that decide their results),
``budget`` (whether a method can run, from its declared refusals and cost), ``seed`` (one seed:
``compute_seed``), ``store`` (the folder layout, atomic writes, skip logic, the manifest),
``runners`` (in process, Dask), ``driver`` (``sweep``).

Note: ``maxk.sweep`` at the top level is the function; import the pieces from here with
``from maxk.sweep.store import read_records`` (the ``from`` form).
"""

from .driver import SweepSummary, sweep
from .plan import PAPER_CONFIGS, Job, Recipe, SweepOptions, config_dir, model_configs, parse_seeds
from .seed import SeedOutput, compute_seed
from .store import read_records, without_timings

__all__ = [
    "PAPER_CONFIGS",
    "Job",
    "Recipe",
    "SeedOutput",
    "SweepOptions",
    "SweepSummary",
    "compute_seed",
    "config_dir",
    "model_configs",
    "parse_seeds",
    "read_records",
    "sweep",
    "without_timings",
]
