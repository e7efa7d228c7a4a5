"""``maxk estimate-bench``: the evaluation protocol for heuristic estimators (issue 4)."""

from __future__ import annotations

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
    default=("10", "4"),
    show_default=True,
    help="families to run (repeatable)",
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
def estimate_bench(base_path, base4_path, models, ks, truth_samples, methods, seed, out, quick, as_json) -> None:
    """Run every method on noised k=10 (distinct) and k=4 (uniform) model families against truth;
    print bias, RMSE, worst error, FLOPs, seconds and the MSE ratio against Monte Carlo."""
    from rich.console import Console  # rich only when the bench runs: keeps `maxk --help` fast

    console = Console(stderr=True)
    log = (lambda s: console.print(s)) if not as_json else (lambda s: None)
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
