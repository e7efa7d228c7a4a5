"""The evaluation protocol for heuristic estimators (issue 4; DESIGN §6).

Two families of models, each made by adding Gaussian noise to the weight matrices of a trained
model (model j gets W + σ_j·rms(W)·ε for every weight matrix W — W_E, W_pos, W_Q, W_K, W_V, W_O,
W_U — with ε standard normal from seed + j; biases stay zero; σ_j evenly spaced on a log scale
between the family's two scales):

- ``k10``: a k = 10, n = 64, d = 32 model under ``distinct`` (Wu's setting). Truth: stratified
  sampling by the value of the max (exact stratum weights, allocation ∝ weight, at least two per
  stratum) from ``truth_samples`` inputs, drawn once and shared by every model of the family;
  each model's standard error is reported.
- ``k4``: the shipped k = 4 model under ``uniform``, exact truth (``maxk.exact.evaluate``).

Per method: bias (mean of estimate − truth), RMSE, worst |error|, mean FLOPs and seconds, and the
MSE ratio against plain Monte Carlo given the same FLOPs: MC with B FLOPs draws
⌊B / f⌋ inputs (f = FLOPs per sample, counted by running the ``sampling`` estimator), so its MSE
is Var[p(x)] / ⌊B / f⌋ (at least one sample), with Var[p(x)] the per-input variance of the
probability on the right answer (from the truth samples). Ratio > 1 means the method beats
sampling at equal compute. With sampled truth the measured MSE includes the truth's own
variance (mean SE², ``mse_truth_noise``); ``rmse_corrected`` and ``mse_ratio_vs_mc_corrected``
subtract it (an unbiased correction; it can hit zero when the method is better than the truth).
``spread_z_rms`` = RMS of error / spread where a method
reports a spread (≈ 1 if calibrated).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.table import Table

from ..circuits import CircuitTables, circuit_tables
from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..exact import evaluate
from ..model import BIAS_NAMES, MaxKTransformer
from ..sampling import per_input_metrics, proportional_allocation

NOISED = (
    "embed.W_E",
    "pos_embed.W_pos",
    "blocks.0.attn.W_Q",
    "blocks.0.attn.W_K",
    "blocks.0.attn.W_V",
    "blocks.0.attn.W_O",
    "unembed.W_U",
)

# Noise scales (relative to each matrix's RMS) chosen by measurement so that the family's true soft
# accuracy spans about 0.6–0.99: see docs/estimators.md, "Evaluation protocol".
SIGMAS = {"k10": (0.08, 0.6), "k4": (0.1, 0.6)}

VAR_SAMPLES = 1_000_000  # samples measuring Var[p(x)] when the truth is exact

DEFAULT_METHODS = ("wick-residual", "systematic", "cumulant", "bins", "mean", "stratified", "sampling")


def noised_model(base: MaxKTransformer, sigma: float, seed: int) -> MaxKTransformer:
    """A copy of ``base`` with every weight matrix W replaced by W + sigma·rms(W)·ε, ε ~ N(0, 1)
    from ``seed`` (biases untouched). Cost O(parameters)."""
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in BIAS_NAMES or name not in NOISED:
                continue
            rms = float(p.double().pow(2).mean().sqrt())
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * (sigma * rms))
    return model


def family_sigmas(n_models: int, lo: float, hi: float) -> np.ndarray:
    """n_models noise scales evenly spaced in log between lo and hi."""
    if n_models == 1:
        return np.array([math.sqrt(lo * hi)])
    return np.exp(np.linspace(math.log(lo), math.log(hi), n_models))


# ---------------------------------------------------------------- truth by shared stratified samples


@dataclass
class TruthSample:
    """Inputs stratified by the max: tokens [N, k], stratum id (the max) per row, exact stratum
    weights w [n] and per-stratum counts."""

    tokens: np.ndarray
    stratum: np.ndarray
    weights: np.ndarray
    counts: np.ndarray


def truth_sample(dist: str | Distribution, n: int, k: int, samples: int, seed: int = 0) -> TruthSample:
    """Draw ``samples`` inputs stratified by the max (allocation ∝ exact weight, ≥ 2 per non-empty
    stratum). Cost O(samples·n) (the distinct sampler sorts n keys per input)."""
    rng = np.random.default_rng(seed)
    dist = resolve(dist, n, k)
    w, alloc = proportional_allocation(dist, n, k, samples)
    live = alloc > 0
    toks, strat = [], []
    for m in np.nonzero(live)[0]:
        for s0 in range(0, alloc[m], 1 << 16):
            size = int(min(1 << 16, alloc[m] - s0))
            toks.append(dist.sample_with_max(n, k, int(m), size, rng).astype(np.int16 if n < 32768 else np.int64))
            strat.append(np.full(size, m, dtype=np.int64))
    return TruthSample(np.concatenate(toks), np.concatenate(strat), w, alloc)


def soft_probs_fast(tab: CircuitTables, tokens: np.ndarray, chunk: int = 1 << 13) -> np.ndarray:
    """Probability on the right answer for each input [N, k] through the circuit tables, in
    chunks of ``chunk`` inputs. Cost per input O(h·k·n + n)."""
    out = np.empty(len(tokens))
    for s0 in range(0, len(tokens), chunk):
        out[s0 : s0 + chunk] = per_input_metrics(tab, tokens[s0 : s0 + chunk].astype(np.int64))[1]
    return out


def stratified_truth(tab: CircuitTables, ts: TruthSample) -> tuple[float, float, float]:
    """(stratified mean of the probability on the right answer, its standard error, the
    per-input variance Var[p(x)] over the whole distribution) from shared samples."""
    p = soft_probs_fast(tab, ts.tokens)
    n = len(ts.weights)
    cnt = np.bincount(ts.stratum, minlength=n).astype(np.float64)
    s1 = np.bincount(ts.stratum, weights=p, minlength=n)
    s2 = np.bincount(ts.stratum, weights=p * p, minlength=n)
    live = cnt > 0
    mean_m = np.where(live, s1 / np.maximum(cnt, 1), 0.0)
    var_m = np.where(cnt > 1, (s2 - cnt * mean_m**2) / np.maximum(cnt - 1, 1), 0.0)
    mu = float(ts.weights @ mean_m)
    se = float(np.sqrt(np.sum(np.where(live, ts.weights**2 * var_m / np.maximum(cnt, 1), 0.0))))
    var_pop = float(ts.weights @ (var_m + (mean_m - mu) ** 2))
    return mu, se, var_pop


def exact_truth(tab: CircuitTables, dist: str, ts: TruthSample) -> tuple[float, float, float]:
    """(exact soft accuracy by enumerating every input, 0, Var[p(x)] estimated from the
    stratified sample ``ts``). Exact enumeration gives only the mean; the per-input variance
    (used only to price Monte Carlo) comes from the samples. Cost O(n^(k+1)·h) + the samples."""
    res = evaluate(tab, dist)
    return res.soft_accuracy, 0.0, stratified_truth(tab, ts)[2]


# ---------------------------------------------------------------- the protocol


@dataclass
class FamilyResult:
    """One family: its models' noise scales and truth, and each method's estimates."""

    name: str
    dist: str
    k: int
    sigmas: list
    truth: list
    truth_se: list
    var_pop: list
    truth_samples: int | None
    mc_flops_per_sample: float
    estimates: dict = field(default_factory=dict)  # method -> list of Estimate dicts
    summary: dict = field(default_factory=dict)  # method -> figures


def summarize(fam: FamilyResult) -> None:
    """Fill ``fam.summary``: per method bias, RMSE, worst error, FLOPs, seconds, MC MSE ratio."""
    truth = np.array(fam.truth)
    var_pop = np.array(fam.var_pop)
    se2 = float(np.mean(np.square(fam.truth_se)))
    for method, ests in fam.estimates.items():
        est = np.array([e["estimate"] for e in ests])
        err = est - truth
        mse = float(np.mean(err**2))
        flops = float(np.mean([e["flops"] for e in ests]))
        n_mc = np.maximum(1.0, np.floor(np.array([e["flops"] for e in ests]) / fam.mc_flops_per_sample))
        mc_mse = float(np.mean(var_pop / n_mc))
        spreads = [e.get("spread") for e in ests]
        z = None
        if all(s is not None and s > 0 for s in spreads):
            z = float(np.sqrt(np.mean((err / np.array(spreads)) ** 2)))
        mse_c = max(mse - se2, 0.0)
        fam.summary[method] = dict(
            bias=float(err.mean()),
            rmse=math.sqrt(mse),
            worst=float(np.abs(err).max()),
            mse=mse,
            mse_truth_noise=se2,
            rmse_corrected=math.sqrt(mse_c),
            mse_ratio_vs_mc_corrected=(mc_mse / mse_c) if mse_c > 0 else float("inf"),
            flops=flops,
            seconds=float(np.mean([e["seconds"] for e in ests])),
            max_seconds=float(np.max([e["seconds"] for e in ests])),
            mc_mse_same_flops=mc_mse,
            mse_ratio_vs_mc=(mc_mse / mse) if mse > 0 else float("inf"),
            spread_z_rms=z,
        )


def run_family(
    name: str,
    base,
    dist: str,
    n_models: int,
    sigmas: tuple[float, float],
    methods,
    *,
    truth_samples: int,
    exact: bool = False,
    seed: int = 0,
    method_options: dict | None = None,
    log: Callable[[str], None] = lambda s: None,
    progress: Callable[[int, int], None] | None = None,
) -> FamilyResult:
    """Build one noised family from ``base``, compute the truth (exact enumeration if ``exact``,
    else ``truth_samples`` stratified samples) and run every method on every model through the
    estimator registry."""
    from .registry import estimate

    method_options = method_options or {}
    cfg = base.cfg
    sig = family_sigmas(n_models, *sigmas)
    t0 = time.perf_counter()
    # with exact truth the samples only measure Var[p(x)] to price Monte Carlo: 10^6 is plenty
    ts = truth_sample(dist, cfg.n, cfg.k, min(truth_samples, VAR_SAMPLES) if exact else truth_samples, seed=seed + 7)
    log(
        f"{name}: {len(ts.tokens)} stratified samples drawn in {time.perf_counter() - t0:.1f}s "
        f"({'truth' if not exact else 'per-input variance only; truth exact'})"
    )
    base_tab = circuit_tables(base)
    probe = estimate(base_tab, "sampling", dist, samples=1000, seed=seed)
    assert probe.flops is not None  # the registry always counts an estimator's FLOPs
    fam = FamilyResult(
        name, dist, cfg.k, [float(s) for s in sig], [], [], [], None if exact else len(ts.tokens), probe.flops / 1000.0
    )
    for j, s in enumerate(sig):
        tab = circuit_tables(noised_model(base, float(s), seed * 100_003 + j))
        truth = exact_truth(tab, dist, ts) if exact else stratified_truth(tab, ts)
        fam.truth.append(truth[0])
        fam.truth_se.append(truth[1])
        fam.var_pop.append(truth[2])
        for meth in methods:
            e = estimate(tab, meth, dist, seed=seed + j, **method_options.get(meth, {}))
            fam.estimates.setdefault(meth, []).append(e.to_dict())
        if progress is not None:
            progress(j + 1, len(sig))
    summarize(fam)
    return fam


def results_table(families: list[FamilyResult]) -> Table:
    """A rich table of every family's per-method figures."""

    t = Table(title="Heuristic estimators on noised model families (error = estimate − truth)")
    for col in (
        "family",
        "method",
        "bias",
        "RMSE",
        "RMSE−truth noise",
        "worst",
        "FLOPs",
        "seconds",
        "MSE ratio vs MC",
        "(corrected)",
        "z rms",
    ):
        t.add_column(col, justify="right" if col not in ("family", "method") else "left")
    for fam in families:
        for meth, s in fam.summary.items():
            t.add_row(
                fam.name,
                meth,
                f"{s['bias']:+.5f}",
                f"{s['rmse']:.5f}",
                f"{s['rmse_corrected']:.5f}",
                f"{s['worst']:.5f}",
                f"{s['flops']:.3g}",
                f"{s['seconds']:.3f}",
                f"{s['mse_ratio_vs_mc']:.3g}",
                f"{s['mse_ratio_vs_mc_corrected']:.3g}",
                "-" if s["spread_z_rms"] is None else f"{s['spread_z_rms']:.2f}",
            )
    return t


def to_json(families: list[FamilyResult], meta: dict) -> str:
    """The protocol's results as JSON text."""
    return json.dumps({"meta": meta, "families": [f.__dict__ for f in families]}, indent=1, default=float)


def check_methods(methods) -> list[str]:
    """Validate method names against the registry."""
    from .registry import ESTIMATORS

    bad = [m for m in methods if m not in ESTIMATORS]
    if bad:
        raise MaxkError(f"unknown estimator(s) {', '.join(bad)}: choose from {', '.join(sorted(ESTIMATORS))}")
    return list(methods)
