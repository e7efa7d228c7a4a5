"""Wick propagation: per-input values of the cumulant explanation (DESIGN §7).

The covariance-propagation estimator ``cumulant`` explains the model's expected soft accuracy
stratum by stratum: in (sub)stratum s the wires it tracks — per head the attention denominator
D_h = Σ_i w_i and numerator N_h = Σ_i w_i v_i, with its normalisation of w — have exact means μ_s
and covariance Σ_s, and the probability on the right answer is a smooth function of them,
g(y) = softmax(EUPU[q] + Σ_h N_h/D_h)[m]. The per-input Wick value of that explanation is

    W(x) = est_s + ∇g(μ_s)·(y(x) − μ_s) + ½[(y(x) − μ_s)ᵀ H_s (y(x) − μ_s) − tr(H_s Σ_s)]

(H_s the Hessian of g at μ_s, est_s the estimator's own estimate in s; first order only in the
sub-strata it evaluates by mean propagation), and W1(x) = g(μ_s) + ∇g(μ_s)·(y(x) − μ_s) is the
mean-propagation baseline. The bracket terms have mean zero under the stratum's exact law, so the
mean of W over the distribution is the estimate (of W1 the order-1 estimate), and f(x) − W(x) is
what the explanation leaves unexplained on x. Inputs no sub-stratum covers get the estimate of the
group whose weights were renormalised over them. docs/wick.md has the derivation and figures.

API: ``explain(tables, dist, **cumulant_options) -> WickExplanation`` (built once; ``.values``,
``.terms``, ``.estimate``, ``.estimate_first``) and ``wick(model_or_tables, dist, inputs=None,
samples=None, seed=0, **options) -> WickValues`` (every input when n^k ≤ 2·10^7, else a sample).

Modules, one idea each (imports run down the list):

* ``rows`` — the sub-strata as rows and which row an input belongs to (``build_rows``, ``assign``);
* ``expansion`` — per row: the estimate, g(μ_s), p, r_h, log μ_D and the exact tr(H_s Σ_s);
* ``formula`` — per input: wires through the tables, their reductions, and W, W1, f, correct;
* ``exhaustive`` — every input in enumeration order, prefixes shared (as ``exact`` does);
* ``terms`` — the first- and second-order terms of a few inputs split by position;
* ``explanation`` — ``explain`` and ``WickExplanation``; ``run`` — ``wick`` and ``WickValues``.

(``summary``, the figures of a run — AUROC, r², variance ratio — from ``maxk.metrics``, was added
beside them for the CLI and the benchmark.)
"""

from .explanation import WickExplanation, explain
from .run import WickValues, wick

__all__ = ["WickExplanation", "WickValues", "explain", "wick"]
