"""Per model of the estimate-bench families: how much of the per-input variance the top-two cell
explanation removes, Var(f)/Var(f − W), at each of its budget rungs (``budget.RESIDUAL_RUNGS``), on
inputs drawn from the distribution; and the explanation alone (E[W], which samples nothing)
against the truth (k4: exact; k10: the sample's mean, standard error sqrt(Var f / inputs)).

    python benchmarks/bench_residual_cells.py [--models 10] [--seed 2] [--inputs 200000] [--k 10 --k 4]

The models are those of ``maxk estimate-bench --models M --seed S`` (same noise scales and seeds).
"""

from __future__ import annotations

import argparse

import numpy as np

from maxk.checkpoint import load
from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import resolve
from maxk.estimators.bench import SIGMAS, family_sigmas, noised_model, soft_probs_fast
from maxk.estimators.budget import RESIDUAL_RUNGS
from maxk.estimators.residual_cells import COMPETITORS, explain_cells
from maxk.exact import evaluate
from maxk.flops import FlopCounter
from maxk.train import trained_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--inputs", type=int, default=200_000)
    ap.add_argument("--k", type=int, action="append")
    args = ap.parse_args()
    rungs = [r for r in RESIDUAL_RUNGS if r.get("explanation") == "cells"]
    for k in args.k or [10, 4]:
        if k == 10:
            base = trained_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32), seed=0, steps=3000)
            name, dist = "k10", "distinct"
        else:
            base, name, dist = load("default"), "k4", "uniform"
        d = resolve(dist, base.cfg.n, base.cfg.k)
        x = d.sample(base.cfg.n, base.cfg.k, args.inputs, np.random.default_rng(args.seed + 11))
        labels = [f"{r.get('cells', 'all')}/{r.get('competitors', COMPETITORS)}" for r in rungs]
        print(f"\n{name} ({dist}), {args.inputs} inputs per model; Var(f)/Var(f - W) per rung (cells/competitors)")
        print(
            f"{'sigma':>6} {'mean f':>7} {'Var f':>8} "
            + " ".join(f"{lab:>12}" for lab in labels)
            + "   E[W] - f̄ (all/8)"
        )
        for j, s in enumerate(family_sigmas(args.models, *SIGMAS[name])):
            tab = circuit_tables(noised_model(base, float(s), args.seed * 100_003 + j))
            f = soft_probs_fast(tab, x)
            ratios, last = [], None
            for r in rungs:
                ex = explain_cells(
                    tab,
                    d,
                    counter=FlopCounter(),
                    max_cells=r.get("cells"),
                    competitors=r.get("competitors", COMPETITORS),
                )
                ratios.append(f.var() / np.var(f - ex.values(x)))
                last = ex
            assert last is not None
            truth = evaluate(tab, dist).soft_accuracy if name == "k4" else f.mean()  # k10: the sample's mean
            gap = last.estimate - truth
            print(
                f"{s:6.3f} {f.mean():7.4f} {f.var():8.2e} " + " ".join(f"{v:12.2f}" for v in ratios) + f"   {gap:+.4f}"
            )


if __name__ == "__main__":
    main()
