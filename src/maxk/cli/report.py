"""``maxk report``: a sweep's runs/ directory as one self-contained HTML page."""

from __future__ import annotations

import click

from ..report import report
from ._app import main


@main.command("report")
@click.argument("runs", metavar="RUNS", type=click.Path(file_okay=False))
@click.option(
    "--out", "out", type=click.Path(file_okay=False), default="report", show_default=True, help="report directory"
)
@click.option("--model", default=None, help="seed to draw, CONFIG/seed-NNNN (default: the worst seed of the first)")
@click.option("--examples", type=int, default=4, show_default=True, help="inputs whose attention is drawn")
def report_cmd(runs, out, model, examples) -> None:
    """Write OUT/index.html from the sweep in RUNS (`maxk sweep`'s layout): the paper's table
    beside the sweep's, bound and estimator error against FLOPs, scaling across configurations,
    Wick and surprise figures where recorded, one model's circuits and attention patterns, and a
    sortable table of every seed. The page opens offline (every figure embedded); OUT is built
    beside and renamed into place. Prints the page's path."""
    click.echo(str(report(runs, out, model=model, examples=examples)))
