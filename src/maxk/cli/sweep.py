"""``maxk sweep``: the paper's experiment over seeds and configurations (docs/sweep.md)."""

from __future__ import annotations

import contextlib

import click

from ..errors import MaxkError
from ..estimators.frontier import parse_budgets
from ..sweep import sweep
from ..sweep.plan import DEFAULT_BUDGET, DEFAULT_MEMORY_GIB, EXTRAS, FRONTIER_BUDGETS, WICK_SAMPLES
from ._app import dist_option, echo_json, main, progress_bar


def _extras(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    items = tuple(x for x in text.replace(" ", "").split(",") if x)
    bad = sorted(set(items) - set(EXTRAS))
    if bad:
        raise MaxkError(f"unknown --with item(s) {', '.join(bad)}: choose from {', '.join(EXTRAS)}")
    return items


@main.command("sweep")
@click.option("--seeds", default="0-150", show_default=True, help="seeds: 0-150, 7, or 0,2,5-9")
@click.option("--k", "k", default="4", show_default=True, help="sequence length(s): 4 or 4,5,10")
@click.option("--vocab", default="64", show_default=True, help="n: 64 or 64,128 (every k x n pair is swept)")
@click.option("--paper", is_flag=True, help="the paper's six configurations (k, n) instead of --k x --vocab")
@click.option("--d-model", type=int, default=32, show_default=True)
@click.option("--d-head", type=int, default=None, help="defaults to d-model")
@click.option("--heads", type=int, default=1, show_default=True)
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="the sweep's folder")
@click.option("--scheduler", default=None, help="address of a running Dask scheduler (tcp://HOST:PORT)")
@click.option("--workers", type=int, default=None, help="start a Dask LocalCluster of this many worker processes")
@click.option("--with", "with_", default=None, help=f"extras per seed, comma-separated: {', '.join(EXTRAS)}")
@click.option("--steps", type=int, default=3000, show_default=True, help="training steps per seed")
@click.option("--batch", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@dist_option("distribution evaluated, proved and estimated under")
@click.option(
    "--eval-samples",
    type=int,
    default=1_000_000,
    show_default=True,
    help="stratified samples where exhaustive evaluation is out of reach",
)
@click.option(
    "--wick-samples",
    type=int,
    default=WICK_SAMPLES,
    show_default=True,
    help="--with wick: every input up to this many, else this many sampled",
)
@click.option(
    "--frontier-budgets",
    default=",".join(f"{b:g}" for b in FRONTIER_BUDGETS),
    show_default=True,
    help="--with frontier: FLOP budgets each budgeted estimator runs at",
)
@click.option(
    "--budget",
    type=float,
    default=DEFAULT_BUDGET,
    show_default=True,
    help="a method runs where its declared cost is at most this many times its cost at k=4, n=64; else refused",
)
@click.option(
    "--memory-gb",
    type=float,
    default=DEFAULT_MEMORY_GIB,
    show_default=True,
    help="address space one method may add (GiB) before it is recorded as refused; 0: no cap",
)
@click.option("--redo", is_flag=True, help="recompute finished seeds (and accept a folder swept with other options)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary")
def sweep_cmd(
    seeds,
    k,
    vocab,
    paper,
    d_model,
    d_head,
    heads,
    out,
    scheduler,
    workers,
    with_,
    steps,
    batch,
    lr,
    weight_decay,
    dist,
    eval_samples,
    wick_samples,
    frontier_budgets,
    budget,
    memory_gb,
    redo,
    as_json,
) -> None:
    """Train, evaluate, prove and estimate every seed of one or more configurations.

    One record per seed under OUT/k{k}-n{n}-d{d}/seed-NNNN.json (written last, atomically) with
    the model beside it and OUT/manifest.json; re-running skips finished seeds. Methods that
    cannot run at a configuration (declared refusals, declared cost above --budget) are
    recorded as refused. Runs here, on a LocalCluster (--workers N) or a Dask scheduler."""
    with contextlib.ExitStack() as stack:
        bar: dict = {}

        def progress(done: int, total: int) -> None:
            if "update" not in bar:
                prog, bar["update"] = progress_bar("seeds", total)
                stack.enter_context(prog)
            bar["update"](done)

        summary = sweep(
            out,
            seeds=seeds,
            k=k,
            vocab=vocab,
            d_model=d_model,
            d_head=d_head,
            heads=heads,
            paper=paper,
            steps=steps,
            batch=batch,
            lr=lr,
            weight_decay=weight_decay,
            dist=dist,
            extras=_extras(with_),
            eval_samples=eval_samples,
            wick_samples=wick_samples,
            frontier_budgets=parse_budgets(frontier_budgets),
            budget=budget,
            memory_gb=memory_gb or None,
            scheduler=scheduler,
            workers=workers,
            redo=redo,
            progress=progress,
        )
    info = {
        "out": str(summary.out),
        "written": len(summary.written),
        "skipped": summary.skipped,
        "runner": summary.runner,
        "seconds": summary.seconds,
    }
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"sweep: {info['written']} seed(s) run, {info['skipped']} already finished, "
        f"{summary.seconds:.1f} s ({summary.runner}) -> {summary.out}"
    )
