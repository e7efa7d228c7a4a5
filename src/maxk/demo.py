"""``maxk demo``: the main job on the shipped model (n=64, k=4, d=32, seed 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import checkpoint
from .distributions import DISTRIBUTIONS
from .estimators.registry import ESTIMATORS, estimate
from .exact import evaluate
from .proofs.frontier import plot_frontier
from .proofs.registry import prove, prove_all
from .proofs.subcubic_losses import loss_ladder
from .report import report
from .surprise import surprise
from .surprise.render import rows_table, summary_lines
from .sweep import sweep
from .wick_propagation import wick
from .wick_propagation.summary import summarize


def run_demo(out_dir: str | Path) -> None:
    """Evaluate the shipped model exactly, prove bounds on its accuracy (with the Pareto plot in
    ``out_dir``), estimate its soft accuracy heuristically, explain it input by input (Wick
    values on a sample), account each explanation's surprise in bits, then sweep a few small
    seeds and write the sweep's HTML report under ``out_dir``; print a summary of each and end
    with the report's path. About a minute on 2 cores with a cold cache."""
    from rich.console import Console  # rich only when the demo runs: keeps `maxk --help` fast
    from rich.table import Table

    console = Console()
    out_dir = Path(out_dir)
    model = checkpoint.load("default")
    cfg, rec = model.cfg, getattr(model, "training_record", None) or {}
    console.print(
        f"[bold]maxk demo[/bold]: shipped model n={cfg.d_vocab} k={cfg.n_ctx} d_model={cfg.d_model} "
        f"d_head={cfg.d_head} heads={cfg.n_heads}, seed {rec.get('seed')}, {rec.get('steps')} steps, "
        f"final training loss {rec.get('final_loss', float('nan')):.3g}"
    )
    exact = {}
    for dist in DISTRIBUTIONS:
        r = exact[dist] = evaluate(model, dist)
        console.print(
            f"  exact ({dist}): accuracy {r.accuracy:.6f} ({r.correct:,}/{r.n_sequences:,}), "
            f"soft accuracy {r.soft_accuracy:.6f}, loss {r.loss:.4g}  ({r.seconds:.2f} s)"
        )

    acc = exact["uniform"].accuracy
    proofs = prove_all(model, "uniform")
    table = Table(title="Compact proofs (uniform inputs): certified lower bounds on accuracy")
    for col in ("strategy", "bound", "bound/acc", "FLOPs", "seconds"):
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    for p in proofs:
        table.add_row(p.method, f"{p.bound:.4f}", f"{p.bound / acc:.4f}", f"{p.flops:.3g}", f"{p.seconds:.2f}")
    console.print(table)
    plot = out_dir / "frontier.png"
    plot_frontier(proofs, acc, plot, title="shipped model: proof FLOPs vs bound", frontier=True)
    console.print(f"  Pareto plot of bound against FLOPs: {plot}")
    cubic_flops = float(next(p.flops or 0 for p in proofs if p.method == "cubic"))
    budget = int(cubic_flops) // 20
    tuned = prove(model, "subcubic-coupled", "uniform", refine_outputs=32, refine_top=64, flop_budget=budget)
    tuned_flops = float(tuned.flops or 0)
    console.print(
        f"  subcubic-coupled with rivals where they gain most within 1/20 of cubic's FLOPs (refine_outputs=32, "
        f"refine_top=64, flop_budget={budget}): bound {tuned.bound:.4f} = {tuned.bound / acc:.4f} of the accuracy at "
        f"{tuned_flops:.3g} FLOPs, 1/{cubic_flops / max(tuned_flops, 1.0):.1f} of cubic's",
        soft_wrap=False,
    )
    ladder = loss_ladder(model, "subcubic")
    lost = ", ".join(f"{term} {share:.2f}" for term, share in sorted(ladder.shares().items(), key=lambda x: -x[1]))
    console.print(
        f"  where subcubic loses (share of the correct inputs it leaves uncertified, by the term that "
        f"loses them; maxk.loss_ladder, docs/proofs.md): {lost}",
        soft_wrap=False,
    )

    truth = exact["uniform"].soft_accuracy
    table = Table(title=f"Heuristic estimates of soft accuracy (uniform inputs; exact {truth:.6f})")
    for col in ("method", "estimate", "error", "FLOPs", "seconds"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for method, spec in ESTIMATORS.items():  # every registered estimator; sampling ones at 10^4 inputs
        opts: dict[str, Any] = {"samples": 10_000} if "samples" in spec.options else {}
        e = estimate(model, method, "uniform", **opts)
        table.add_row(
            method + (" (10^4 samples)" if opts else ""),
            f"{e.estimate:.6f}",
            f"{e.estimate - truth:+.2e}",
            f"{e.flops:.3g}",
            f"{e.seconds:.2f}",
        )
    console.print(table)
    # the compute knob: settings chosen to stay within the budget
    for method, budget in (("cumulant", 1e6), ("cumulant", 1e7), ("allocated", 1e7), ("wick-residual", 1e7)):
        e = estimate(model, method, "uniform", budget=budget)
        settings = {k: v for k, v in e.options.items() if k not in ("budget", "seed")}
        console.print(
            f"  {method} within {budget:.0e} FLOPs: {e.estimate:.6f} (error {e.estimate - truth:+.2e}) "
            f"at {e.flops:.3g} FLOPs; settings {settings}"
        )

    v = wick(model, "uniform", samples=200_000, seed=0)
    s = summarize(v)
    console.print(
        f"Wick values of the cumulant explanation on {s['n_inputs']:,} sampled inputs ({s['seconds']:.2f} s): "
        f"mean W {s['mean_wick']:.6f} (explanation {s['estimate']:.6f}); AUROC of 1 - W at finding the "
        f"wrong inputs {s['auroc']:.4f} (first order {s['auroc_first_order']:.4f}); "
        f"r2 {s['r2']:.4f}; Var(f)/Var(f - W) {s['variance_ratio']:.3g}. "
        "Every input: `maxk wick default` (docs/wick.md)."
    )

    # a small prior (3 initialisations) keeps the demo short; `maxk surprise default` uses 6
    t = surprise(model, "uniform", prior=3, calibration_models=2, weights_evaluations=4)
    console.print(rows_table(t))
    for line in summary_lines(t):
        console.print(line)

    runs = out_dir / "sweep"
    budgets = (1e5, 1e6, 1e7, 1e8)  # every budgeted estimator at each: the report's budget curve
    sw = sweep(runs, seeds="0-2", k=4, vocab=16, d_model=32, steps=300, extras=["frontier"], frontier_budgets=budgets)
    console.print(
        f"Sweep (k=4, n=16, d_model=32, 300 steps; seeds 0-2; budgeted estimators at 1e5-1e8 FLOPs): "
        f"{len(sw.written)} seeds written, "
        f"{sw.skipped} already finished, {sw.seconds:.1f} s -> {runs}  (the paper's: `maxk sweep --seeds 0-150`)"
    )
    page = report(runs, out_dir / "report")
    console.print(f"Report of the sweep (opens offline): {page}", soft_wrap=True)  # the path unbroken
