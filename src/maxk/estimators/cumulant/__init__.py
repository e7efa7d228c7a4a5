"""Covariance (cumulant) propagation of soft accuracy (DESIGN §7, Christiano–Neyman–Xu 2022).

The estimator conditions on what it can weigh exactly and propagates means and covariances
through the rest:

1. **Strata with exact weights** (``strata``). The max m, the query q = x[k-1] and the positions
   holding m. Under ``distinct``: (m, q = m) and (m, q < m, position of m) — every stratum's
   remaining tokens are an ordered draw *without replacement* from S = [0, m) \\ {q}. Under
   ``uniform``: (m, q, set P of non-query positions holding m) — the remaining tokens are i.i.d.
   uniform on S = [0, m). (For k − 1 > 8 only sets of at most ``max_copies`` positions — default
   2 — are enumerated and the weights renormalised within each m; the dropped mass is reported in
   ``extra``: 0.25% for n = 64, k = 10, where the estimate then takes ≈ 10 s.)
2. **Exact first and second moments of the attention sums** (``populations``). Per head, with
   w_i = exp(EQKE[q, x_i] + EQKP[q, i]) = α_i β(x_i) and values v_i = EVOU[x_i] + PVOU[i],
   the denominator D = Σ_i w_i and numerator N = Σ_i w_i v_i are sums over positions of
   functions of one token each. Their means and (co)variances — including the finite-population
   covariance −Cov_S(f, g)/(|S| − 1) between two positions drawn without replacement — are exact,
   from prefix sums over the token axis of β, β·EVOU, β²·EVOU and β²·EVOU² (per query token),
   minus the tokens a stratum excludes (``_Population``). Where the excluded (heavy) tokens outweigh
   the rest so far that the difference would lose the population's second moments to rounding
   (bound: ε·Σ_{t<m} β²·Σ_i α_i²·scale² ≥ ``_DIRECT_TOL``·μ_D², i.e. an error of ≈ 10⁻⁶ in a logit
   variance; up to a third of the strata of the noisiest models), the population is summed
   token by token instead. (Before this, such strata produced arbitrary values, e.g. 0.997 for a
   stratum whose exact conditional soft accuracy is 0.044.)
3. **Heavy tokens conditioned on exactly** (``strata._refine``, evaluated by ``heavy``). A token
   below m whose attention weight can rival the max's (common in noised models, whose EQKE rows are
   not monotone) appears rarely but then dominates N/D — a law no Gaussian closure represents:
   measured, without this step the estimate is off by up to 0.3 on noised models. Each stratum is
   split on its heaviest drawn token (up to ``max_heavy`` candidates with weight ≥ ``tau`` × the
   fixed tokens'): "none drawn" keeps covariance propagation over the light tokens, "token h at
   position J is the heaviest drawn" fixes h and propagates over the lighter ones (mean
   propagation there by default, ``heavy_order``), with exact sub-stratum probabilities. The
   default cap of 12 heavy tokens per stratum matters: with 8 the k = 4 family's RMSE was 5×
   larger (tokens beyond the cap stay in the Gaussian closure); 16 or 24 changed nothing. The
   heavy sub-strata are evaluated in one vectorised pass (``heavy_path="vectorised"``, default)
   or as ordinary strata (``heavy_path="generic"``, the reference; same value to rounding).
4. **Ratio to second order** (``logits``). L = EUPU[q] + Σ_h N_h / D_h. Its mean takes the
   second-order delta correction E[N/D] ≈ μ_N/μ_D + (μ_N Var D − Cov(N, D))/μ_D²
   (``ratio_correction``); its covariance is the linearised one, J Σ Jᵀ. Only the quadratic forms
   the read-out needs are formed (a few n-vectors per stratum), never the n × n covariance.
5. **Read-out** (``readout``). ``readout="gauss"`` (default): the margin
   Z = L_m − logsumexp_{j≠m} L_j is taken as Gaussian with the linearised variance and a
   second-order (Hessian of logsumexp) mean correction (``lse_correction``), and E[σ(Z)] is a 1-D
   Gauss–Hermite integral. ``readout="taylor"``: the second-order Taylor expansion
   E[p_m] ≈ p_m(μ) + ½ tr(∇²p_m Σ_L). ``order=1`` is mean propagation (soft accuracy of the mean
   logits, mean of N/D taken as μ_N/μ_D).

The presumptions of independence: third and higher cumulants of N, D are dropped (Gaussian
closure), the logits are treated as jointly Gaussian at the read-out, and the ratio and read-out
are expanded around the mean. Where a stratum's remaining tokens can out-attend the max (a
token just below m) the true law of N/D is skewed and the expansion is least accurate.

Cost: O(h²·n³) for the prefix tables, then O(strata·h²·n·(n + k)) (the n² term: one product of
the read-out direction with EVOU per stratum and head, shared by both quadratic forms). For
n = 64, k = 10 (distinct) there are 1.8·10⁴ strata; heavy-token conditioning adds up to
max_heavy·(k − 2) mean-propagation sub-strata per stratum, each costing 8 operations per output
and position (``heavy._heavy_mean_field``): 2–5·10⁵ logit rows on the noised k = 10 models.
Measured with the defaults: 5.7–9.3·10⁸ counted FLOPs (mean 7.6·10⁸) and 0.2–0.4 s per estimate
on the 2-core machine (k = 4 family: 3.5·10⁸, 0.15–0.2 s). All products run single-threaded
through torch (``matmul._mm``): numpy's OpenBLAS threads made them several times slower whenever
the other core was busy.

Layout, one idea a module (imports run down this list; no cycles):

* ``matmul`` — ``_mm``, the single-threaded float64 products every step uses;
* ``readout`` — step 5: ``_readout``, Gauss–Hermite nodes, ``expected_softmax``, ``READOUTS``;
* ``populations`` — step 2: prefix tables (``_Tables``), stratum populations (``_Population``,
  ``_population_mask``), ``_var_sum`` and the per-block moments of D and N (``_block_moments``);
* ``strata`` — steps 1 and 3: the strata (``_strata``) and their heavy-token split (``_refine``);
* ``heavy`` — the two evaluation paths of the heavy sub-strata (``_split_heavy``, the vectorised
  mean field ``_heavy_mean_field``, ``_merge_heavy``);
* ``logits`` — step 4: the logits' mean (``_logit_mean``) and linearised covariance (``_logit_cov``);
* ``driver`` — ``cumulant_propagation``, the registry entry ``cumulant``, ``stratum_moments``.

The general covariance-propagation engine the tests check the propagation rules with
(``Moments``) lives in ``tests/moments_engine.py``.
"""

from __future__ import annotations

from .driver import cumulant, cumulant_propagation, stratum_moments
from .readout import READOUTS, expected_softmax

__all__ = ["READOUTS", "cumulant", "cumulant_propagation", "expected_softmax", "stratum_moments"]
