"""``maxk estimate``: one heuristic estimate of a model's expected soft accuracy."""

from __future__ import annotations

import click

from .. import checkpoint
from ..errors import MaxkError
from ..estimators.registry import ESTIMATORS, estimate
from ._app import dist_option, echo_json, list_option, main

# CLI flag -> estimator option (as the registry declares it)
_FLAGS = {"--bins": "n_bins", "--samples": "samples", "--levels": "levels"}


@main.command("estimate")
@click.argument("model")
@click.option("--method", required=True, help=f"estimator: {', '.join(ESTIMATORS)}")
@dist_option()
@click.option("--bins", "n_bins", type=int, default=None, help="number of bins (method bins)")
@click.option("--samples", type=int, default=None, help="number of sampled inputs (sampling methods)")
@click.option(
    "--levels",
    type=int,
    default=None,
    help="values down the hierarchy that the systematic design stratifies on (method systematic)",
)
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (sampling methods)")
@click.option(
    "--budget",
    type=float,
    default=None,
    help="FLOPs the estimate may count: the method's settings are chosen to stay within it "
    "(instead of --bins/--samples/--levels); the FLOPs spent are reported",
)
@click.option("--json", "as_json", is_flag=True, help="print method, estimate, flops, seconds (and spread) as JSON")
@list_option(ESTIMATORS, "list the estimators and exit", _FLAGS)
def estimate_cmd(model, method, dist, n_bins, samples, levels, seed, budget, as_json) -> None:
    """Estimate MODEL's expected soft accuracy from its weights with one method.

    MODEL is a maxk .safetensors file, a TransformerLens .pth checkpoint, or 'default'.
    """
    if method not in ESTIMATORS:
        raise MaxkError(f"unknown method {method!r}: choose one of {', '.join(sorted(ESTIMATORS))}")
    declared = ESTIMATORS[method].options
    given = {flag: v for flag, v in (("--bins", n_bins), ("--samples", samples), ("--levels", levels)) if v is not None}
    for flag in given:
        if _FLAGS[flag] not in declared:
            raise MaxkError(f"option {flag} does not apply to method {method!r}")
    if budget is not None and given:
        raise MaxkError(f"--budget chooses the settings: drop {', '.join(sorted(given))}")
    res = estimate(
        checkpoint.load(model), method, dist, seed=seed, budget=budget, **{_FLAGS[f]: v for f, v in given.items()}
    )
    out = {"method": res.method, "estimate": res.estimate, "flops": res.flops, "seconds": res.seconds, "dist": res.dist}
    if budget is not None:
        out["budget"] = budget
        out["settings"] = {k: v for k, v in res.options.items() if k not in ("seed", "budget")}
    if res.spread is not None:
        out["spread"] = res.spread
    if as_json:
        echo_json(out)
        return
    spread = f" ± {res.spread:.2g}" if res.spread is not None else ""
    within = "" if budget is None else f" of a {budget:.3g} budget; settings {out['settings'] or 'defaults'}"
    click.echo(
        f"{res.method} ({res.dist}): soft accuracy ≈ {res.estimate:.6f}{spread}  "
        f"[{res.flops:.3g} FLOPs{within}, {res.seconds:.2f} s]"
    )
