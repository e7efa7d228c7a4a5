"""Summary statistics of per-input arrays, weighted by each input's probability."""

from __future__ import annotations

import numpy as np


def weighted_auroc(score: np.ndarray, positive: np.ndarray, weight: np.ndarray | None = None) -> float:
    """P[score of a positive > score of a negative] + ½ P[tie], positives and negatives drawn
    with probability ∝ ``weight`` (uniform if None): the area under the ROC curve of ranking by
    ``score`` (higher = more likely positive). NaN when either class is empty. score, positive,
    weight: [N]. Cost O(N log N)."""
    score = np.asarray(score, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    w = np.ones(len(score)) if weight is None else np.asarray(weight, dtype=np.float64)
    wp, wn = w * pos, w * ~pos
    tp, tn = wp.sum(), wn.sum()
    if tp <= 0 or tn <= 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    s = score[order]
    first = np.r_[True, s[1:] != s[:-1]]  # start of each group of tied scores
    group = np.cumsum(first) - 1
    gp = np.bincount(group, weights=wp[order])  # positive weight per tie group
    gn = np.bincount(group, weights=wn[order])
    below = np.cumsum(gn) - gn  # negative weight strictly below each group
    return float((gp * (below + 0.5 * gn)).sum() / (tp * tn))


def weighted_variance(x: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Variance of x [N] under the probability weights ∝ ``weight`` (uniform if None)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.ones(len(x)) if weight is None else np.asarray(weight, dtype=np.float64)
    w = w / w.sum()
    mu = float(w @ x)
    return float(w @ (x - mu) ** 2)
