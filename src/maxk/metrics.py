"""Summary statistics of per-input arrays, weighted by each input's probability."""

from __future__ import annotations

import numpy as np
import torch


def _rank(sorted_scores: np.ndarray, x: np.ndarray) -> np.ndarray:
    """For each x: the number of ``sorted_scores`` <= x (``np.searchsorted(..., side="right")``;
    torch's bucketize, about twice as fast on [10⁷] against [10⁴]). O(len(x)·log)."""
    return torch.bucketize(torch.from_numpy(x), torch.from_numpy(sorted_scores), right=True).numpy()


def weighted_auroc(score: np.ndarray, positive: np.ndarray, weight: np.ndarray | None = None) -> float:
    """P[score of a positive > score of a negative] + ½ P[tie], positives and negatives drawn
    with probability ∝ ``weight`` (uniform if None): the area under the ROC curve of ranking by
    ``score`` (higher = more likely positive). NaN when either class is empty. score, positive,
    weight: [N]. Only the smaller class is sorted and the other class looked up in it, so the
    cost is O(N log min(P, N − P)) for P positives: the few wrong inputs among 1.7·10⁷ are a
    small table to search, not a sort of the whole."""
    score = np.asarray(score, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == len(score):
        return float("nan")
    pos_is_small = n_pos <= len(score) - n_pos
    small = pos if pos_is_small else ~pos
    s_small, s_large = score[small], score[~small]
    w_small = np.ones(len(s_small)) if weight is None else np.asarray(weight, dtype=np.float64)[small]
    w_large = None if weight is None else np.asarray(weight, dtype=np.float64)[~small]
    t_small = float(w_small.sum())
    t_large = float(len(s_large)) if w_large is None else float(w_large.sum())
    if t_small <= 0 or t_large <= 0:
        return float("nan")
    order = np.argsort(s_small, kind="stable")
    s_sorted, w_sorted = s_small[order], w_small[order]
    below = np.r_[0.0, np.cumsum(w_sorted)]  # below[i]: weight of the i lowest
    above = np.r_[np.cumsum(w_sorted[::-1])[::-1], 0.0]  # above[i]: weight of all but the i lowest
    right = _rank(s_sorted, s_large)
    left = right.copy()  # differs only where a small-class score ties the input's
    tie = np.flatnonzero(right > 0)
    tie = tie[s_sorted[right[tie] - 1] == s_large[tie]]
    left[tie] = np.searchsorted(s_sorted, s_large[tie], side="left")
    tied = below[right] - below[left]
    # Per large-class input: the small-class weight the positive side of the pair outranks.
    won = (above[right] if pos_is_small else below[left]) + 0.5 * tied
    total = float(won.sum()) if w_large is None else float(w_large @ won)
    return total / (t_small * t_large)


def weighted_variance(x: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Variance of x [N] under the probability weights ∝ ``weight`` (uniform if None). Cost O(N)."""
    x = np.asarray(x, dtype=np.float64)
    if weight is None:
        return float(np.var(x))
    w = np.asarray(weight, dtype=np.float64)
    total = float(w.sum())
    d = x - float(w @ x) / total
    d *= d
    return float(w @ d) / total
