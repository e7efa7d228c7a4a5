"""What a run of Wick values says: how well the explanation ranks the inputs the model gets
wrong, and how much of the model's behaviour it accounts for input by input."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import weighted_auroc, weighted_variance
from .run import WickValues


def summarize(v: WickValues) -> dict[str, Any]:
    """Figures of a run, every mean weighted by the inputs' probability weights:

    auroc / auroc_first_order: AUROC of the explanation-only scores 1 − W(x) and 1 − W1(x) at
    finding the inputs the model gets wrong; auroc_output: the same for 1 − f(x) (the model's own
    confidence, the output-only baseline); r2 = 1 − Var(f − W)/Var(f) (and r2_first_order);
    variance_ratio = Var(f)/Var(f − W), the factor by which W as a control variate cuts the
    variance of sampling. With a reference law (``wick(..., reference=)``), ``anomaly``:
    ``anomaly_figures``. Cost O(N log N)."""
    w = np.asarray(v.weight, dtype=np.float64)
    wrong = ~np.asarray(v.correct, dtype=bool)
    var_f = weighted_variance(v.soft, w)
    var_r = weighted_variance(v.soft - v.wick, w)
    var_r1 = weighted_variance(v.soft - v.wick_first, w)
    return {
        "estimate": float(v.estimate),
        "estimate_first_order": float(v.estimate_first),
        "mean_wick": float(v.mean_wick),
        "mean_soft": float(w @ v.soft / w.sum()),
        "exhaustive": bool(v.exhaustive),
        "n_inputs": int(v.n_inputs),
        "wrong_share": float(w @ wrong / w.sum()),
        "auroc": weighted_auroc(1.0 - v.wick, wrong, w),
        "auroc_first_order": weighted_auroc(1.0 - v.wick_first, wrong, w),
        "auroc_output": weighted_auroc(1.0 - v.soft, wrong, w),
        "r2": 1.0 - var_r / var_f if var_f > 0 else float("nan"),
        "r2_first_order": 1.0 - var_r1 / var_f if var_f > 0 else float("nan"),
        "variance_ratio": var_f / var_r if var_r > 0 else float("inf"),
        "variance_ratio_first_order": var_f / var_r1 if var_r1 > 0 else float("inf"),
        "seconds": float(v.seconds),
        "flops": int(v.flops),
        "anomaly": anomaly_figures(v),
    }


def anomaly_figures(v: WickValues) -> dict[str, Any] | None:
    """How well departure from an explanation built on a reference law finds the inputs outside
    that law (None without a reference): ``reference``, ``outside_share``, and the AUROC of
    separating the outside inputs from the rest by |f − W| (``auroc``), |f − W1|
    (``auroc_first_order``), 1 − W (``auroc_explanation_only``, no f) and the model's own
    confidence 1 − max_o p_o (``auroc_output``, the output-only baseline). No score uses which
    inputs are outside; that is only the answer key. Cost O(N log N)."""
    if v.outside is None or v.confidence is None:
        return None
    w = np.asarray(v.weight, dtype=np.float64)
    out = np.asarray(v.outside, dtype=bool)
    return {
        "reference": v.reference,
        "outside_share": float(w @ out / w.sum()),
        "auroc": weighted_auroc(np.abs(v.soft - v.wick), out, w),
        "auroc_first_order": weighted_auroc(np.abs(v.soft - v.wick_first), out, w),
        "auroc_explanation_only": weighted_auroc(1.0 - v.wick, out, w),
        "auroc_output": weighted_auroc(1.0 - v.confidence, out, w),
    }


def top_departures(v: WickValues, top: int) -> np.ndarray:
    """Indices of the ``top`` inputs with the largest |f(x) − W(x)|, largest first. Cost O(N)."""
    gap = np.abs(np.asarray(v.soft) - np.asarray(v.wick))
    top = min(int(top), len(gap))
    if top <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.argpartition(-gap, top - 1)[:top]
    return idx[np.argsort(-gap[idx], kind="stable")]
