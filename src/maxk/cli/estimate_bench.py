"""``maxk estimate-bench``: the evaluation protocol for heuristic estimators (issue 4)."""

from __future__ import annotations

import functools
import time

import click

from .. import checkpoint
from ..atomic import write_text_atomic
from ..config import ModelConfig
from ..errors import MaxkError
from ..estimators import bench
from ..train import trained_model
from ._app import MODEL_HELP, echo_json, main, progress_bar


def _k10_base(path: str | None, log):
    """The k = 10 base model: ``path`` if given, else the recipe-trained n=64, k=10, d=32 model
    (seed 0, 3000 steps; cached after the first run, which trains it for several minutes)."""
    if path is not None:
        return checkpoint.load(path)
    log("k10 base: training (or loading from cache) n=64, k=10, d=32, seed 0, 3000 steps")
    return trained_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32), seed=0, steps=3000)


@main.command("estimate-bench")
@click.option(
    "--base",
    "base_path",
    default=None,
    help=f"k=10 base model ({MODEL_HELP}); default: the "
    "recipe-trained n=64, k=10 model (trained and cached on first use)",
)
@click.option("--base4", "base4_path", default="default", show_default=True, help="k=4 base model")
@click.option("--models", type=click.IntRange(1, 10_000), default=100, show_default=True, help="models per family")
@click.option(
    "--k",
    "ks",
    type=click.Choice(["10", "4"]),
    multiple=True,
    default=None,
    help="families to run (repeatable) [default: 10 and 4; with --budgets and --base, the base's own]",
)
@click.option(
    "--truth-samples",
    type=click.IntRange(1000, 10**9),
    default=4_000_000,
    show_default=True,
    help="stratified samples per model for the k=10 truth",
)
@click.option(
    "--methods",
    default=None,
    help="comma-separated estimator names [default: wick-residual,systematic,cumulant,bins,"
    "mean,stratified,sampling; with --quick: wick-residual,systematic,cumulant,stratified,sampling]",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the results JSON here")
@click.option(
    "--quick",
    is_flag=True,
    help="smoke run: 2 models per family, 20000 truth samples, cheap methods "
    "and options (cumulant without heavy-token conditioning)",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON instead of a table")
@click.option(
    "--budgets",
    default=None,
    help="comma-separated FLOP budgets (e.g. 1e5,1e6,1e7,1e8,1e9): run every method at each through "
    "estimate(..., budget=F) and report MSE against FLOPs beside Monte Carlo's (the frontier)",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="with --budgets: write the log-log MSE-vs-FLOPs plot (PNG) here",
)
def estimate_bench(
    base_path, base4_path, models, ks, truth_samples, methods, seed, out, quick, as_json, budgets, plot_path
) -> None:
    """Run every method on noised k=10 (distinct) and k=4 (uniform) model families against truth;
    print bias, RMSE, worst error, FLOPs, seconds and the MSE ratio against Monte Carlo.

    With --budgets: the MSE-versus-FLOPs frontier instead (every method at every budget; rows
    family, method, budget, flops, rmse, mc_rmse, mse_ratio, bias; --json prints {"rows": [...]}).
    --base may then be any checkpoint: its family is the one of its context length."""
    from rich.console import Console  # rich only when the bench runs: keeps `maxk --help` fast

    console = Console(stderr=True)
    log = (lambda s: console.print(s)) if not as_json else (lambda s: None)
    if budgets is not None:
        _frontier(
            base_path,
            base4_path,
            models,
            ks,
            truth_samples,
            methods,
            seed,
            out,
            quick,
            as_json,
            budgets,
            plot_path,
            log,
        )
        return
    if plot_path is not None:
        raise MaxkError("--plot needs --budgets")
    ks = ks or ("10", "4")
    if methods is None:
        methods = "wick-residual,systematic,cumulant,stratified,sampling" if quick else ",".join(bench.DEFAULT_METHODS)
    meths = bench.check_methods([m.strip() for m in methods.split(",") if m.strip()])
    if not meths:
        raise MaxkError("--methods names no estimator")
    if quick:
        models, truth_samples = min(models, 2), min(truth_samples, 20_000)
    options = {"sampling": {"samples": 2000 if quick else 10_000}, "stratified": {"samples": 2000 if quick else 10_000}}
    if quick:
        options["systematic"] = {"samples": 2000}
        options["wick-residual"] = {"samples": 2000}
        options["cumulant"] = {"max_heavy": 0}
    t0 = time.perf_counter()
    fams = []
    for kk in ks:
        if kk == "10":
            base, dist, name, exact = _k10_base(base_path, log), "distinct", "k10", False
        else:
            base, dist, name, exact = checkpoint.load(base4_path), "uniform", "k4", True
        if base.cfg.n_ctx != int(kk):
            raise MaxkError(f"the k={kk} family needs a base model with n_ctx={kk}, got {base.cfg.n_ctx}")
        prog, update = progress_bar(f"{name} family", models, enabled=not as_json)
        with prog:
            fam = bench.run_family(
                name,
                base,
                dist,
                models,
                bench.SIGMAS[name],
                meths,
                truth_samples=truth_samples,
                exact=exact,
                seed=seed,
                method_options={m: o for m, o in options.items() if m in meths},
                log=log,
                progress=update,
            )
        fams.append(fam)
        if not exact:
            log(
                f"{name}: truth from {fam.truth_samples} stratified samples per model; standard error "
                f"mean {sum(fam.truth_se) / len(fam.truth_se):.2e}, max {max(fam.truth_se):.2e}"
            )
        log(
            f"{name}: true soft accuracy {min(fam.truth):.4f} .. {max(fam.truth):.4f} "
            f"(noise scales {fam.sigmas[0]:.3g} .. {fam.sigmas[-1]:.3g})"
        )
    meta = {
        "models": models,
        "truth_samples": truth_samples,
        "methods": meths,
        "seed": seed,
        "quick": quick,
        "seconds": time.perf_counter() - t0,
        "method_options": options,
    }
    if out:
        write_text_atomic(out, bench.to_json(fams, meta))
    if as_json:
        echo_json({"meta": meta, "summary": {f.name: f.summary for f in fams}})
    else:
        Console(width=max(Console().width, 120)).print(bench.results_table(fams))


def _family_spec(n: int, k: int) -> tuple[str, str, bool, tuple[float, float]]:
    """(name, distribution, exact truth?, noise scales) of the noised family of context length k:
    k10 and k4 as in the protocol; any other k under ``distinct`` (k > 5) or ``uniform``, exact
    truth when the n^k sequences are few enough to enumerate quickly."""
    if k == 10:
        return "k10", "distinct", False, bench.SIGMAS["k10"]
    if k == 4:
        return "k4", "uniform", True, bench.SIGMAS["k4"]
    dist = "distinct" if k > 5 else "uniform"
    return f"k{k}", dist, n**k <= 2 * 10**7, bench.SIGMAS["k10" if k > 5 else "k4"]


def _frontier(
    base_path, base4_path, models, ks, truth_samples, methods, seed, out, quick, as_json, budgets, plot_path, log
):
    """``estimate-bench --budgets``: the frontier of every method on each family."""
    from rich.console import Console

    from ..estimators import frontier

    bud = frontier.parse_budgets(budgets)
    meths = bench.check_methods(
        [m.strip() for m in (methods or ",".join(frontier.FRONTIER_METHODS)).split(",") if m.strip()]
    )
    if not meths:
        raise MaxkError("--methods names no estimator")
    from ..estimators.budget import plannable

    bad = [m for m in meths if not plannable(m)]
    if bad:
        raise MaxkError(f"no compute knob for {', '.join(bad)}: --budgets runs {', '.join(frontier.FRONTIER_METHODS)}")
    if quick:
        models, truth_samples = min(models, 2), min(truth_samples, 20_000)
    bases = []  # (k, model)
    given = checkpoint.load(base_path) if base_path is not None else None
    if given is not None and not ks:
        bases.append((given.cfg.n_ctx, given))
    for kk in ks or (() if given is not None else ("10", "4")):
        k = int(kk)
        if given is not None and given.cfg.n_ctx == k:
            bases.append((k, given))
        elif k == 10:
            bases.append((k, _k10_base(None, log)))
        else:
            m4 = checkpoint.load(base4_path)
            if m4.cfg.n_ctx != 4:
                raise MaxkError(f"the k=4 family needs a base model with n_ctx=4, got {m4.cfg.n_ctx}")
            bases.append((k, m4))
    fams = []
    run = functools.partial(frontier.run_frontier, truth_samples=truth_samples, seed=seed, log=log)
    for k, base in bases:
        name, dist, exact, sig = _family_spec(base.cfg.n, k)
        fam_out = None if out is None else f"{out}.{name}.partial"
        prog, update = progress_bar(f"{name} frontier", models, enabled=not as_json)
        with prog:
            fam = run(name, base, dist, models, sig, meths, bud, exact=exact, out=fam_out, progress=update)
        fams.append(fam)
    rows = [r for f in fams for r in f["rows"]]
    if out:
        write_text_atomic(out, frontier.json.dumps({"rows": rows, "families": fams}, indent=1, default=float))
    if plot_path:
        frontier.plot_frontier(fams, plot_path)
    if as_json:
        echo_json({"rows": rows})
    else:
        Console(width=max(Console().width, 140)).print(frontier.rows_table(rows))
