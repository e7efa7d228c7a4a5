"""``maxk prove``: certified lower bounds on accuracy, one strategy or all of them."""

from __future__ import annotations

import inspect
from typing import Any

import click

from .. import checkpoint
from ..distributions import resolve
from ..errors import MaxkError
from ..exact import evaluate
from ..proofs.frontier import frontier_runs, plot_frontier
from ..proofs.registry import STRATEGIES, prove, prove_all
from ..registry import Refused
from ..sampling import evaluate_sampled
from ._app import dist_option, echo_json, list_option, main

_KEYS = ("method", "bound", "certified", "n_sequences", "flops", "seconds", "cost", "dist")


def strategy_options(name: str, pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs as keyword options of strategy ``name``, each value read as
    the option's declared type (its annotation: bool, int, float or str; an int option takes
    1e6-style integers too). MaxkError, one line, for a malformed pair, an option the strategy
    does not declare, or a value of the wrong type. Cost O(pairs)."""
    method = STRATEGIES.get(name)
    params = inspect.signature(method.run).parameters
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise MaxkError(f"--option wants KEY=VALUE, not {pair!r}")
        if key not in method.options:
            takes = f" (it takes {', '.join(sorted(method.options))})" if method.options else ""
            raise MaxkError(f"{name!r} does not take option {key}{takes}")
        out[key] = _typed(key, raw, str(params[key].annotation))
    return out


_KINDS = {"bool": "true or false", "int": "an integer", "float": "a number"}


def _typed(key: str, raw: str, kind: str) -> Any:
    """``raw`` read as ``kind`` (an annotation's text: "bool", "int", "float"; else the string)."""
    try:
        if kind == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if kind == "int":
            x = float(raw)
            if not x.is_integer():
                raise ValueError(raw)
            return int(x)
        if kind == "float":
            return float(raw)
    except (ValueError, OverflowError):
        raise MaxkError(f"option {key} wants {_KINDS[kind]}, not {raw!r}") from None
    return raw


def _true_accuracy(model, dist: str) -> tuple[float, str]:
    """Exact accuracy when exhaustive evaluation is feasible, else a 10^6-input stratified sample."""
    try:
        return evaluate(model, dist).accuracy, "true accuracy"
    except MaxkError:
        return evaluate_sampled(model, dist, 1_000_000).accuracy, "sampled accuracy"


@main.command("prove")
@click.argument("model_path", metavar="MODEL", required=False)
@click.option(
    "--strategy",
    "strategy",
    default="cubic",
    show_default=True,
    help="a proof strategy (see `maxk prove --list`) or 'all'",
)
@dist_option("input distribution the bound is over", choice=True)
@click.option("--json", "as_json", is_flag=True, help="JSON: one object, or a list for --strategy all")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="write bound vs FLOPs (PNG) with the brute-force point and the true accuracy",
)
@click.option(
    "--frontier",
    is_flag=True,
    help="with --strategy all: also the knob settings between subcubic and cubic (hybrid, cheaper cubic); "
    "the plot draws the Pareto frontier",
)
@click.option(
    "--option",
    "-o",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="an option of the strategy, repeatable (e.g. -o flop_budget=1.7e6; `maxk prove --list` names "
    "the strategies, docs/proofs.md their options)",
)
@list_option(STRATEGIES, "list the strategies and exit")
def prove_cmd(model_path, strategy, dist, as_json, plot_path, frontier, option_pairs) -> None:
    """Prove a lower bound on MODEL's accuracy.

    The bound holds for the exact real-number model with the checkpoint's weights: every
    floating-point step is enclosed and a too-close call counts against the bound. MODEL is a
    maxk .safetensors file, a TransformerLens .pth checkpoint, or 'default' (the shipped model)."""
    if model_path is None:
        raise click.UsageError("missing argument MODEL")
    if frontier and strategy != "all":
        raise MaxkError("--frontier needs --strategy all")
    if option_pairs and strategy == "all":
        raise MaxkError("--option needs one --strategy, not 'all'")
    if strategy != "all" and strategy not in STRATEGIES:
        raise MaxkError(f"unknown proof strategy {strategy!r}: choose one of {', '.join(STRATEGIES)} or 'all'")
    options = strategy_options(strategy, option_pairs) if option_pairs else {}
    model = checkpoint.load(model_path)
    if frontier:
        results = _frontier(model, dist)
        if not results:
            raise MaxkError("no proof strategy supports this model")
    elif strategy == "all":
        results = prove_all(model, dist)
        if not results:
            raise MaxkError("no proof strategy supports this model")
    else:
        results = [prove(model, strategy, dist, **options)]
    if plot_path is not None:
        acc, label = _true_accuracy(model, dist)
        cfg = model.cfg
        plot_frontier(results, acc, plot_path, f"{model_path}: n={cfg.n} k={cfg.k} ({dist})", label, frontier)
    rows = [
        {k: r.to_dict()[k] for k in _KEYS} | ({"options": r.options} if frontier or r.options else {}) for r in results
    ]
    if as_json:
        echo_json(rows if strategy == "all" else rows[0])
        return
    if strategy != "all":
        r = results[0]
        opts = "".join(f" {k}={v}" for k, v in sorted(r.options.items()))
        click.echo(
            f"{r.method}{opts}: accuracy >= {r.bound:.6f} ({r.certified:,} of {r.n_sequences:,} inputs, {dist}); "
            f"{r.flops:.3g} FLOPs, {r.seconds:.2f} s, cost {r.cost}"
        )
    else:
        from rich.console import Console  # rich only for the table: keeps `maxk --help` fast
        from rich.table import Table

        table = Table(title=f"proofs ({dist}, {results[0].n_sequences:,} inputs)")
        for col in ("strategy", "bound", "certified", "FLOPs", "seconds", "cost"):
            table.add_column(col, justify="left" if col in ("strategy", "cost") else "right", no_wrap=col != "cost")
        for r in results:
            cert = f"{r.certified:,}" if r.certified < 10**9 else f"{r.certified:.4g}"
            name = r.method + "".join(f" {k}={v}" for k, v in sorted(r.options.items()))
            table.add_row(name, f"{r.bound:.6f}", cert, f"{r.flops:.3g}", f"{r.seconds:.2f}", r.cost)
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
        console.print(table)
    if plot_path is not None:
        click.echo(f"wrote {plot_path}")


def _frontier(model, dist: str) -> list:
    """Every point of ``frontier_runs`` that the model allows, proved (declared refusals skipped)."""
    d = resolve(dist, model.cfg.n, model.cfg.k)
    names = [s for s in STRATEGIES.names() if STRATEGIES.get(s).refusal(model.cfg, d) is None]
    results = []
    for name, options in frontier_runs(model.cfg, names):
        try:
            results.append(prove(model, name, d, **options))
        except Refused:
            continue
    return results
