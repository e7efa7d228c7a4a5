"""``maxk surprise``: the surprise accounting table of a model (docs/surprise.md)."""

from __future__ import annotations

import click

from .. import checkpoint
from ..errors import MaxkError
from ._app import dist_option, echo_json, main


@main.command("surprise")
@click.argument("model_path", metavar="MODEL", default="default")
@dist_option()
@click.option("--json", "as_json", is_flag=True, help='print {"rows": [...], ...} as one JSON object')
@click.option("--family", type=int, default=None, help="average the table over N noised copies of the model")
@click.option("--prior-samples", type=int, default=None, help="initialisations in the prior (default 6; cached)")
@click.option("--explanations", default=None, help="comma-separated rows to compute (default: all)")
@click.option("--calibration", type=int, default=None, help="noised models calibrating the estimators (default 4)")
@click.option("--weights-evals", type=int, default=None, help="exact evaluations of the weights search (default 8)")
@click.option("--checks", "show_checks", default=None, help="also list the itemised checks of this row")
@click.option("--no-cache", is_flag=True, help="neither read nor write the prior and per-model caches")
def surprise_cmd(
    model_path, dist, as_json, family, prior_samples, explanations, calibration, weights_evals, show_checks, no_cache
) -> None:
    """How many bits each explanation of MODEL's behaviour costs: S(π) + S(Y | π).

    Rows: none (every output a uniform guess), the weights (a short description found by search),
    every proof strategy and every estimator. S(π) prices each check an explanation performs on
    the weights by its pass probability over freshly initialised models (the training recipe's
    prior); S(Y | π) is what is left: the binomial tail of the inputs a proof leaves, or the
    estimator's calibrated predictive probability of the observed soft accuracy at resolution 1/N.
    """
    from ..surprise import surprise
    from ..surprise.accounting import CALIBRATION_MODELS, WEIGHTS_EVALUATIONS
    from ..surprise.prior import DEFAULT_SAMPLES

    for flag, v, least in (
        ("--prior-samples", prior_samples, 2),
        ("--calibration", calibration, 2),
        ("--weights-evals", weights_evals, 1),
        ("--family", family, 1),
    ):
        if v is not None and v < least:
            raise MaxkError(f"{flag} must be at least {least}, got {v}")
    names = None if explanations is None else [e.strip() for e in explanations.split(",") if e.strip()]
    if show_checks is not None and names is not None and show_checks not in names:
        raise MaxkError(f"--checks {show_checks!r} names a row not among --explanations")
    model = checkpoint.load(model_path)
    if as_json:
        say = None
    else:
        from rich.console import Console

        err = Console(stderr=True)
        say = (lambda s: err.print(f"[dim]surprise: {s}[/dim]")) if err.is_terminal else None
    table = surprise(
        model,
        dist,
        explanations=names,
        prior=DEFAULT_SAMPLES if prior_samples is None else prior_samples,
        family=family,
        calibration_models=CALIBRATION_MODELS if calibration is None else calibration,
        weights_evaluations=WEIGHTS_EVALUATIONS if weights_evals is None else weights_evals,
        cache=not no_cache,
        progress=say,
    )
    if show_checks is not None and show_checks not in table.names():
        raise MaxkError(f"no row {show_checks!r} in the table: choose from {', '.join(table.names())}")
    if as_json:
        echo_json(table.to_dict())
        return
    from rich.console import Console

    from ..surprise.render import checks_table, rows_table, summary_lines

    out = Console(width=max(Console().width, 140))
    out.print(rows_table(table))
    for line in summary_lines(table):
        click.echo(line)
    if show_checks is not None:
        out.print(checks_table(table, show_checks))
