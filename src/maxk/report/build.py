"""``report(runs, out)``: read a sweep's runs/ directory and write the self-contained page
``out/index.html``, the whole directory built beside ``out`` and renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MaxkError
from ..estimators.registry import ESTIMATORS
from ..proofs.registry import STRATEGIES
from . import figures, sections
from .html import img, page, section
from .runs import Runs, load_runs, method_names

MARKER = ".maxk-report"  # present in every directory ``report`` writes: only such a one is replaced


def render(runs: Runs, model: str | None = None, examples: int = 4) -> str:
    """The report page for ``runs`` as one HTML string. ``model``: the seed to draw
    (``CONFIG/seed-NNNN``; default ``sections.choose_seed``). Cost: a few matplotlib figures, and
    the chosen model run on up to 2^17 inputs (or 10^5 sampled)."""
    chosen = sections.choose_seed(runs, model)
    strategies = method_names(runs.seeds, "proofs", STRATEGIES.names())
    estimators = method_names(runs.seeds, "estimates", ESTIMATORS.names())
    body = [
        sections.overview(runs),
        sections.paper_table(runs),
        section("accuracy", "Accuracy over seeds", img(figures.accuracy_over_seeds(runs), "accuracy of every seed")),
        sections.proofs_section(runs, strategies),
        sections.estimators_section(runs, estimators),
        sections.scaling_section(runs, strategies, estimators),
        sections.wick_section(runs),
        sections.surprise_section(runs),
        sections.model_section(chosen, examples),
        sections.seed_table(runs, strategies, estimators),
    ]
    n_conf, n_seeds = len(runs.configs), len(runs.seeds)
    title = f"maxk sweep report: {n_conf} configuration{'s' * (n_conf != 1)}, {n_seeds} seed{'s' * (n_seeds != 1)}"
    return page(title, "".join(body))


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise MaxkError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise MaxkError(f"{out}: a non-empty directory that is not a maxk report; refusing to replace it")


def write_report_dir(out: str | os.PathLike, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> text) as the directory ``out``, atomically: built in a temporary
    directory beside it, then renamed into place (an old report there is replaced; any other
    non-empty directory is refused). Returns ``out``."""
    out = Path(out)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / MARKER).write_text("written by maxk report; the whole directory is replaced on the next run\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:  # put the previous report back
                os.replace(old / out.name, out)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def report(runs: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None, examples: int = 4) -> Path:
    """Read the sweep in ``runs`` (``maxk sweep``'s layout) and write ``out/index.html``, a page
    that opens offline: the paper's table beside the sweep's, bound and estimator error against
    FLOPs, scaling across configurations, Wick and surprise figures where recorded, one model's
    circuits and attention, and a sortable per-seed table. ``model`` picks the drawn seed
    (``CONFIG/seed-NNNN``). Returns the page's path. MaxkError for a directory that holds no
    finished seed, an unknown ``model``, or an ``out`` that is not a report directory."""
    if examples < 1:
        raise MaxkError("examples must be at least 1")
    out = Path(out)
    _check_replaceable(out)
    html = render(load_runs(runs), model, examples)
    return write_report_dir(out, {"index.html": html}) / "index.html"
