"""Surprise accounting: what it costs, and the tables the issue asks for.

Part 1, tails: ``tail_bits`` (log space) against the straightforward exact way, a big-integer sum
sum_{i<=r} C(N, i)·(n-1)^i / n^N, for near-perfect counts at n = 64, k = 4 (r wrong inputs),
timed in the same run (scipy's ``binom.logsf`` underflows to -inf there).
Part 2, the prior (n = 64, k = 4, uniform): building it from scratch in a fresh cache, per
section, and per initialisation (goal: within 10 minutes per config).
Part 3, one table with the prior cached (goal: within 2 minutes), first with fresh per-model
caches (weights search, estimator calibration), then fully cached, beside the straightforward
baseline of running every proof and estimator once plus one exact evaluation.
Part 4, the tables: the shipped model and ``--noised`` noised copies (accuracy < 1), each ranked
by total surprise with the gap between the best explanation and the weights' description bound,
then the ``--family`` average.

    python benchmarks/bench_surprise.py [--prior-samples 6] [--noised 5] [--family 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

import maxk
from maxk.estimators.bench import noised_model
from maxk.estimators.registry import ESTIMATORS, estimate
from maxk.exact import evaluate
from maxk.proofs.registry import prove_all
from maxk.surprise import Prior, surprise
from maxk.surprise.render import summary_lines
from maxk.surprise.tails import tail_bits


def part1() -> None:
    print("Part 1: binomial tail at n = 64, k = 4 (N = 64^4), -log2 P(Bin(N, 1/64) >= N - r)")
    print(f"{'r':>7s} {'bits':>16s} {'log-space s':>12s} {'big-int s':>10s} {'ratio':>8s} {'rel. diff':>10s}")
    n, N = 64, 64**4
    for r in (100, 1000, 4377, 20000):
        t0 = time.perf_counter()
        fast = tail_bits(N, N - r, 1 / n)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        num, term = 0, 1
        for i in range(r + 1):  # C(N, i)·63^i built incrementally
            num += term
            term = term * (N - i) * (n - 1) // (i + 1)
        shift = max(0, num.bit_length() - 60)
        exact = 6 * N - (math.log2(num >> shift) + shift)
        t_exact = time.perf_counter() - t0
        print(
            f"{r:7d} {fast:16.3f} {t_fast:12.5f} {t_exact:10.4f} {t_exact / t_fast:8.1f} "
            f"{abs(fast - exact) / exact:10.1e}"
        )


def part2(model, samples: int) -> None:
    print(f"\nPart 2: the prior from scratch ({samples} initialisations, n = 64, k = 4, uniform)")
    t0 = time.perf_counter()
    surprise(model, "uniform", prior=samples, weights_evaluations=1, calibration_models=2)
    total = time.perf_counter() - t0
    prior = Prior(model.cfg, "uniform", samples)
    print(f"  sections cached: {len(prior.sections)} ({', '.join(sorted(s.split(':')[0] for s in prior.sections))})")
    print(f"  whole first table incl. the prior: {total:.1f} s; per initialisation ≤ {total / samples:.1f} s")
    print(f"  10-minute goal: about {600 / (total / samples):.0f} initialisations fit (met if ≥ {samples})")


def part3(model, samples: int) -> None:
    print("\nPart 3: one table with the prior cached (shipped model)")
    t0 = time.perf_counter()
    surprise(model, "uniform", prior=samples)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    surprise(model, "uniform", prior=samples)
    again = time.perf_counter() - t0
    t0 = time.perf_counter()
    tab = maxk.circuit_tables(model)
    evaluate(tab, "uniform")
    prove_all(model, "uniform")
    for name in ESTIMATORS.names():
        estimate(tab, name, "uniform")
    base = time.perf_counter() - t0
    print(f"  {'run':44s} {'seconds':>8s} {'ratio vs baseline':>18s}")
    print(f"  {'baseline: evaluate + every proof + every estimator':44s} {base:8.1f} {1.0:18.2f}")
    print(f"  {'table, prior cached, fresh per-model caches':44s} {first:8.1f} {first / base:18.2f}")
    print(f"  {'table, everything cached':44s} {again:8.1f} {again / base:18.2f}")
    print(f"  2-minute goal (prior cached): {'met' if first <= 120 else 'MISSED'} ({first:.0f} s)")


def _brief(name: str, table) -> None:
    acc = table.observed["accuracy"]
    print(f"\n  {name}: accuracy {acc:.6f}, soft {table.observed['soft_accuracy']:.6f}")
    for r in table.rows:
        lb = " (lower bound)" if table.lower_bound(r) else ""
        print(
            f"    {r['explanation']:22s} {r['observed'][:4]:4s} S(pi) {r['s_pi']:14,.1f}"
            f"  S(Y|pi) {r['s_y_given_pi']:14,.1f}  total {r['total']:14,.1f}  {r['kind']}{lb}"
        )
    for line in summary_lines(table)[:-1]:
        print("    " + line)


def part4(model, samples: int, n_noised: int, family: int) -> None:
    print("\nPart 4: tables (bits)")
    _brief("shipped model", surprise(model, "uniform", prior=samples))
    for j, sigma in enumerate(np.linspace(0.05, 0.3, n_noised)):
        m = noised_model(model, float(sigma), seed=200 + j)
        _brief(f"noised copy σ={sigma:.3f}", surprise(m, "uniform", prior=samples))
    if family:
        _brief(f"family average over {family} noised models", surprise(model, "uniform", prior=samples, family=family))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior-samples", type=int, default=6)
    ap.add_argument("--noised", type=int, default=5)
    ap.add_argument("--family", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="parts 1-3 only")
    ap.add_argument("--keep-cache", action="store_true", help="use $MAXK_CACHE instead of a fresh temporary one")
    args = ap.parse_args()
    if not args.keep_cache:
        os.environ["MAXK_CACHE"] = tempfile.mkdtemp(prefix="maxk-bench-surprise-")
    model = maxk.load("default")
    part1()
    part2(model, args.prior_samples)
    part3(model, args.prior_samples)
    if not args.quick:
        part4(model, args.prior_samples, args.noised, args.family)


if __name__ == "__main__":
    main()
