"""The AUROCs ``maxk wick`` reports over every input: ``maxk.metrics.weighted_auroc`` (sort the
smaller class, look the other up in it) against the straightforward way (sort every score, sum
per group of ties), in the same run, on the same arrays, with the answers compared.

    python benchmarks/bench_metrics.py [--inputs 16777216] [--wrong-share 3e-4] [--repeat 3]

The arrays mimic an exhaustive k = 4, n = 64 run: scores 1 − W clustered near 0 with ties, a
few wrong inputs (the shipped model gets 0.026% wrong), unit weights. CPU seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from maxk.metrics import weighted_auroc


def auroc_by_full_sort(score: np.ndarray, positive: np.ndarray, weight: np.ndarray) -> float:
    """The straightforward way: one stable sort of all N scores, weights summed per tie group."""
    wp, wn = weight * positive, weight * ~positive
    order = np.argsort(score, kind="stable")
    s = score[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
    gp = np.bincount(group, weights=wp[order])
    gn = np.bincount(group, weights=wn[order])
    return float((gp * (np.cumsum(gn) - 0.5 * gn)).sum() / (wp.sum() * wn.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description="weighted_auroc against a full sort")
    ap.add_argument("--inputs", type=int, default=1 << 24)
    ap.add_argument("--wrong-share", type=float, default=3e-4)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    wrong = rng.random(a.inputs) < a.wrong_share
    score = np.round(rng.random(a.inputs) ** 8, 9) + 0.5 * wrong * rng.random(a.inputs)
    weight = np.ones(a.inputs)
    print(f"{a.inputs} inputs, {int(wrong.sum())} wrong; CPU seconds")
    print("| run | full sort | weighted_auroc | ratio | same answer |")
    print("|---|---|---|---|---|")
    for r in range(a.repeat):
        t = time.process_time()
        full = auroc_by_full_sort(score, wrong, weight)
        t_full = time.process_time() - t
        t = time.process_time()
        fast = weighted_auroc(score, wrong, weight)
        t_fast = time.process_time() - t
        same = abs(full - fast) <= 1e-12 * abs(full)
        print(f"| {r + 1} | {t_full:.2f} | {t_fast:.2f} | {t_full / t_fast:.1f}× | {same} ({fast:.12f}) |")


if __name__ == "__main__":
    main()
