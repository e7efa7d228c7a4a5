"""``maxk estimate``: one heuristic estimate of a model's expected soft accuracy."""
from __future__ import annotations

import click

from .cli import echo_json, main
from .distributions import DISTRIBUTIONS
from .errors import MaxkError

# CLI option -> estimator keyword
_OPTIONS = {"--bins": "n_bins", "--samples": "samples", "--levels": "levels"}


@main.command("estimate")
@click.argument("model")
@click.option("--method", required=True, help="estimator: sampling, stratified, systematic, mean, bins, cumulant")
@click.option("--dist", default="uniform", show_default=True, help=f"input distribution: {', '.join(DISTRIBUTIONS)}")
@click.option("--bins", "n_bins", type=int, default=None, help="number of bins (method bins)")
@click.option("--samples", type=int, default=None, help="number of sampled inputs (sampling methods)")
@click.option("--levels", type=int, default=None, help="values down the hierarchy that the systematic "
              "design stratifies on (method systematic)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (sampling methods)")
@click.option("--json", "as_json", is_flag=True, help="print method, estimate, flops, seconds (and spread) as JSON")
def estimate_cmd(model, method, dist, n_bins, samples, levels, seed, as_json):
    """Estimate MODEL's expected soft accuracy from its weights with one method.

    MODEL is a maxk .safetensors file, a TransformerLens .pth checkpoint, or 'default'.
    """
    from . import checkpoint
    from .estimators.registry import ESTIMATORS, estimate, options_of

    if method not in ESTIMATORS:
        raise MaxkError(f"unknown method {method!r}: choose one of {', '.join(sorted(ESTIMATORS))}")
    given = {flag: v for flag, v in (("--bins", n_bins), ("--samples", samples), ("--levels", levels))
             if v is not None}
    for flag in given:
        if _OPTIONS[flag] not in options_of(method):
            raise MaxkError(f"option {flag} does not apply to method {method!r}")
    res = estimate(checkpoint.load(model), method, dist, seed=seed, **{_OPTIONS[f]: v for f, v in given.items()})
    out = {"method": res.method, "estimate": res.estimate, "flops": res.flops, "seconds": res.seconds,
           "dist": res.dist}
    if res.spread is not None:
        out["spread"] = res.spread
    if as_json:
        echo_json(out)
        return
    spread = f" ± {res.spread:.2g}" if res.spread is not None else ""
    click.echo(f"{res.method} ({res.dist}): soft accuracy ≈ {res.estimate:.6f}{spread}  "
               f"[{res.flops:.3g} FLOPs, {res.seconds:.2f} s]")
