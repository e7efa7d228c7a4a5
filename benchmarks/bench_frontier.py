"""The coarse settings against the straightforward read, and a short MSE-versus-FLOPs frontier.

Part 1 — reading K competitor outputs against reading all n (the straightforward way), on noised
n = 64, k = 10 models under ``distinct`` (coarse ``max-query``, two heavy tokens, mean read-out):
counted FLOPs and wall seconds of each, their ratio, and how far apart the two estimates are.

Part 2 (``--models N``) — ``estimators.frontier.run_frontier`` on N noised k = 10 models at the
given budgets: each method's RMSE beside Monte Carlo's at the same FLOPs (``maxk estimate-bench
--budgets`` is the full protocol).

    python benchmarks/bench_frontier.py [--models 0] [--budgets 1e5,1e6,1e7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console

from _stats import mean_sd
from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.estimators import frontier
from maxk.estimators.bench import SIGMAS, noised_model
from maxk.estimators.coarse import coarse_propagation
from maxk.flops import FlopCounter
from maxk.train import trained_model


def _timed(tab, outputs):
    c = FlopCounter()
    t0 = time.perf_counter()
    est, _ = coarse_propagation(tab, "distinct", "max-query", "mean", 1, c, 2, outputs)
    return est, c.total, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description="coarse settings against the full read; a short frontier")
    ap.add_argument("--models", type=int, default=0, help="models in the frontier part (0: skip it)")
    ap.add_argument("--budgets", default="1e5,1e6,1e7", help="budgets of the frontier part")
    ap.add_argument("--outputs", type=int, default=8, help="competitor outputs K of the cheap read")
    args = ap.parse_args()
    base = trained_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32), seed=0, steps=3000)
    ratios_f, ratios_s, diffs = [], [], []
    for j, sigma in enumerate((0.08, 0.15, 0.3, 0.45, 0.6)):
        tab = circuit_tables(noised_model(base, sigma, 100 + j))
        full = min((_timed(tab, None) for _ in range(3)), key=lambda r: r[2])
        cheap = min((_timed(tab, args.outputs) for _ in range(3)), key=lambda r: r[2])
        ratios_f.append(full[1] / cheap[1])
        ratios_s.append(full[2] / cheap[2])
        diffs.append(abs(full[0] - cheap[0]))
        print(
            f"sigma {sigma:.2f}: all outputs {full[0]:.5f} ({full[1]:.3g} FLOPs, {full[2] * 1e3:.1f} ms)  "
            f"K={args.outputs} {cheap[0]:.5f} ({cheap[1]:.3g} FLOPs, {cheap[2] * 1e3:.1f} ms)"
        )
    print(
        f"reading K={args.outputs} outputs instead of all 64: FLOPs {mean_sd(ratios_f, '.2f')}x fewer, "
        f"time {mean_sd(ratios_s, '.2f')}x less, |difference| {mean_sd(diffs, '.4f')}"
    )
    if args.models > 0:
        fam = frontier.run_frontier(
            "k10",
            base,
            "distinct",
            args.models,
            SIGMAS["k10"],
            frontier.FRONTIER_METHODS,
            frontier.parse_budgets(args.budgets),
            truth_samples=400_000,
            exact=False,
        )
        Console(width=160).print(frontier.rows_table(fam["rows"]))
        best = {b: max(r["mse_ratio"] for r in fam["rows"] if r["budget"] == b) for b in fam["budgets"]}
        print("best MSE ratio against Monte Carlo per budget:", {f"{b:.0e}": round(v, 3) for b, v in best.items()})
        print("mean FLOPs spent / budget:", np.mean([r["flops"] / r["budget"] for r in fam["rows"]]).round(3))


if __name__ == "__main__":
    main()
