"""``surprise``: the surprise accounting table of a model, one row per explanation (DESIGN §8).

Rows, in order: ``none`` and ``none-soft`` (no explanation: every output an independent uniform
guess), ``weights`` (a short description of the weights), every registered proof strategy and
every registered estimator (``STRATEGIES``, ``ESTIMATORS``: a newly registered one gets a row).
How each figure is derived is in docs/surprise.md and in the modules named below.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from ..circuits import circuit_tables
from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..estimators.bench import SIGMAS, family_sigmas, noised_model
from ..estimators.registry import ESTIMATORS, estimate
from ..exact import EXHAUSTIVE_LIMIT, evaluate
from ..model import MaxKTransformer
from ..proofs.registry import STRATEGIES, prove
from ..registry import Refused
from .brute_checks import brute_checks, pattern_rates
from .cache import SectionFile, cache_root
from .checks import Accounted, Check, account
from .cubic_checks import cubic_checks, cubic_facts, cubic_prior
from .dimensionality import unexplained_dimensionality
from .estimator_checks import (
    CALIBRATION_MODELS,
    calibration_errors,
    calibration_truth,
    estimate_check,
    predictive,
    residual_bits,
)
from .prior import Prior, resolve_prior, weights_hash
from .strategy_checks import headline_check, markov_bits, strategy_prior
from .subcubic_checks import subcubic_checks, subcubic_facts, variant_settings
from .table import SurpriseRow, SurpriseTable, make_row
from .tails import tail_bits
from .weights import describe_weights

NONE_ROWS = ("none", "none-soft")
WEIGHTS_EVALUATIONS = 8  # exact evaluations the default weights search may run

_LOWER_NOTE = "lower bound: S(π) and the total"
_PRESUME_INDEPENDENT = "checks pass independently under the prior (S(π) = sum of their bits)"


def explanation_names() -> list[str]:
    """Every explanation a table can have, in table order."""
    return [*NONE_ROWS, "weights", *STRATEGIES.names(), *ESTIMATORS.names()]


class _Context:
    """What the rows of one table share: the model, its exact figures, the prior and caches."""

    def __init__(
        self,
        model,
        d: Distribution,
        prior: Prior,
        calibration_models: int,
        weights_evals: int,
        cache: bool,
        calibrate_on: _Context | None = None,
    ):
        self.model, self.d, self.prior = model, d, prior
        self.calibrate_on = calibrate_on or self  # family members share the base model's calibration
        self.cfg = model.cfg
        self.n, self.k = self.cfg.n, self.cfg.k
        self.N = d.n_sequences(self.n, self.k)
        self.p_guess = 1.0 / self.cfg.d_vocab_out
        self.tables = circuit_tables(model)
        ev = evaluate(self.tables, d)
        assert ev.correct is not None
        self.correct, self.accuracy, self.soft = ev.correct, ev.accuracy, ev.soft_accuracy
        self.calibration_models, self.weights_evals = calibration_models, weights_evals
        h = weights_hash(model)
        self.model_cache = SectionFile(cache_root() / f"model_{h}.json" if cache else None, h)

    def observed(self) -> dict:
        return {"correct": self.correct, "accuracy": self.accuracy, "soft_accuracy": self.soft, "n_sequences": self.N}


def _none_row(ctx: _Context, soft: bool) -> SurpriseRow:
    """No explanation: each output an independent uniform guess (p = 1/n). Accuracy: the count's
    binomial tail. Soft accuracy: a uniform guess is a one-hot random prediction, whose soft
    accuracy is its accuracy, so the tail at ceil(N·s) (resolution 1/N)."""
    if soft:
        count = math.ceil(ctx.N * ctx.soft - 1e-9)
        value, observed, name = ctx.soft, "soft_accuracy", "none-soft"
    else:
        count, value, observed, name = ctx.correct, ctx.accuracy, "accuracy", "none"
    return make_row(
        name,
        "none",
        observed,
        value,
        account([]),
        tail_bits(ctx.N, count, ctx.p_guess),
        None,
        "exact",
        presumption="outputs are independent uniform guesses",
        details={"count": count, "p_guess": ctx.p_guess},
    )


def _weights_row(ctx: _Context) -> SurpriseRow:
    data = ctx.model_cache.get(
        f"weights:{ctx.d.name}:e{ctx.weights_evals}",
        lambda: describe_weights(ctx.model, ctx.d, target=ctx.correct, evaluations=ctx.weights_evals).to_dict(),
    )
    bits = float(data["bits"])
    pi = Accounted(bits, None, "exact", bits)
    residual = math.log2(2 * int(data["tol"]) + 1)
    return make_row(
        "weights",
        "weights",
        "accuracy",
        ctx.accuracy,
        pi,
        residual,
        None,
        "exact",
        kind_note="upper bound on the bits of optimisation (a description found by search, verified exactly)",
        presumption="none: the described weights' count is evaluated exactly; Y is named within ±tol of it",
        details=data,
    )


def _proof_checks(ctx: _Context, name: str, certified: int) -> tuple[list[Check], float, str, list[int] | None]:
    """(checks, extra error, presumption, initialisations' certified counts or None)."""
    if name == "brute":
        checks, spread = brute_checks(ctx.prior, ctx.d, certified)
        return checks, spread, _PRESUME_INDEPENDENT + "; uncertified inputs spread over patterns by size", None
    if name == "cubic":
        found = cubic_facts(ctx.model, ctx.d, certified)
        if found is not None:
            facts, settings = found
            return (
                cubic_checks(ctx.prior, ctx.d, facts, settings),
                0.0,
                _PRESUME_INDEPENDENT + "; a check's pass rate depends only on which of q, m, t coincide and c",
                cubic_prior(ctx.prior, ctx.d, settings)["certified"],
            )
    counts = strategy_prior(ctx.prior, ctx.d, name)
    settings = variant_settings(name)
    if settings is not None:
        facts = subcubic_facts(ctx.model, ctx.d, settings, certified)
        if facts is not None:
            return (
                subcubic_checks(ctx.prior, ctx.d, name, settings, facts),
                0.0,
                _PRESUME_INDEPENDENT + "; a pair's gap check rate depends only on (q = m, tokens below T, q <= T)",
                counts,
            )
    return [headline_check(name, certified, counts)], 0.0, "one check: the whole proof's result", counts


def _proof_row(ctx: _Context, name: str) -> SurpriseRow:
    res = prove(ctx.model, name, ctx.d)
    B = res.certified
    if B > ctx.correct:
        raise AssertionError(f"strategy {name} certified {B} inputs but only {ctx.correct} are correct")
    checks, spread, presumption, init_counts = _proof_checks(ctx, name, B)
    acc = account(checks)
    acc = Accounted(acc.bits, math.hypot(acc.error or 0.0, spread), acc.kind, acc.largest_single)
    mean_acc = pattern_rates(ctx.prior, ctx.d)["mean_accuracy"]
    joint = max(acc.largest_single, markov_bits(B, ctx.N, mean_acc))
    if init_counts is not None:
        joint = max(joint, headline_check(name, B, init_counts).bits)
    dims = unexplained_dimensionality(name, ctx.n, ctx.k, ctx.cfg.d_model)
    return make_row(
        name,
        "proof",
        "accuracy",
        ctx.accuracy,
        acc,
        tail_bits(ctx.N - B, ctx.correct - B, ctx.p_guess),
        None,
        "exact",
        checks=checks,
        kind_note=""
        if acc.kind != "bound"
        else "S(π) and the total are lower bounds (a check no initialisation passed)",
        s_pi_joint=joint,
        presumption=presumption
        + ". Joint figure (no presumption, a lower bound): max(largest single check, Markov bound on"
        " P(init gets >= B right), share of inits certifying >= B)",
        dimensionality=dims,
        details={"certified": B, "bound": res.bound, "flops": res.flops, "seconds": res.seconds},
    )


def _estimator_row(ctx: _Context, name: str) -> SurpriseRow:
    est = estimate(ctx.tables, name, ctx.d, seed=0)
    F, cal = ctx.calibration_models, ctx.calibrate_on
    truth = cal.model_cache.get(f"calibration-truth:{ctx.d.name}:F{F}", lambda: calibration_truth(cal.model, ctx.d, F))
    errors = cal.model_cache.get(
        f"calibration:{name}:{ctx.d.name}:F{F}", lambda: calibration_errors(cal.model, ctx.d, name, truth)
    )
    bias, sd, _ = predictive(errors, ctx.N)
    s_y, s_y_err = residual_bits(ctx.soft, est.estimate, errors, ctx.N)
    check = estimate_check(ctx.prior, ctx.d, name, est.estimate, sd)
    acc = account([check])
    return make_row(
        name,
        "estimator",
        "soft_accuracy",
        ctx.soft,
        acc,
        s_y,
        s_y_err,
        "estimate",
        checks=[check],
        kind_note=""
        if acc.kind != "bound"
        else "S(π) and the total are lower bounds (no initialisation's estimate came close)",
        s_pi_joint=acc.bits,
        presumption=f"predictive Normal(estimate - bias, sd) calibrated on {F} noised models",
        details={
            "estimate": est.estimate,
            "bias": bias,
            "sd": sd,
            "calibration_errors": errors,
            "flops": est.flops,
            "seconds": est.seconds,
        },
    )


def _rows(ctx: _Context, names: list[str], progress: Callable[[str], None]) -> tuple[list[SurpriseRow], dict]:
    rows, refused = [], {}
    for name in names:
        progress(name)
        if name in NONE_ROWS:
            rows.append(_none_row(ctx, soft=name == "none-soft"))
        elif name == "weights":
            rows.append(_weights_row(ctx))
        elif name in STRATEGIES:
            reason = STRATEGIES.get(name).refusal(ctx.cfg, ctx.d)
            if reason is not None:
                refused[name] = reason
                continue
            try:
                rows.append(_proof_row(ctx, name))
            except Refused as e:
                refused[name] = str(e)
        else:
            reason = ESTIMATORS.get(name).refusal(ctx.cfg, ctx.d)
            if reason is not None:
                refused[name] = reason
                continue
            rows.append(_estimator_row(ctx, name))
    return rows, refused


def _check_names(explanations: list[str] | None) -> list[str]:
    allowed = explanation_names()
    if explanations is None:
        return allowed
    bad = [e for e in explanations if e not in allowed]
    if bad:
        raise MaxkError(f"unknown explanation(s) {', '.join(bad)}: choose from {', '.join(allowed)}")
    if not explanations:
        raise MaxkError("no explanation named")
    return [e for e in allowed if e in explanations]


def _mean_rows(tables: list[list[SurpriseRow]]) -> list[dict]:
    """Per explanation present in every member: the mean of each figure (errors: root mean
    square over members divided by sqrt(members)); kinds combined."""
    common = [r.explanation for r in tables[0] if all(any(x.explanation == r.explanation for x in t) for t in tables)]
    out = []
    for name in common:
        rs = [next(x for x in t if x.explanation == name) for t in tables]
        d = rs[0].to_dict()
        for attr in ("observed_value", "s_pi", "s_y_given_pi", "total"):
            d[attr] = float(np.mean([getattr(r, attr) for r in rs]))
        for attr in ("s_pi_error", "s_y_error", "total_error"):
            es = [getattr(r, attr) for r in rs]
            d[attr] = (
                None if any(e is None for e in es) else float(np.sqrt(np.mean(np.square(es))) / math.sqrt(len(es)))
            )
        joints = [r.s_pi_joint for r in rs]
        d["s_pi_joint"] = None if any(j is None for j in joints) else float(np.mean(joints))  # type: ignore[arg-type]
        d["details"] = {"members": [{"s_pi": r.s_pi, "s_y_given_pi": r.s_y_given_pi, "total": r.total} for r in rs]}
        d["checks"] = []
        out.append(d)
    return out


def surprise(
    model: MaxKTransformer,
    dist: str | Distribution = "uniform",
    *,
    explanations: list[str] | None = None,
    prior: Prior | int | None = None,
    family: int | None = None,
    calibration_models: int = CALIBRATION_MODELS,
    weights_evaluations: int = WEIGHTS_EVALUATIONS,
    cache: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> SurpriseTable:
    """The surprise accounting table of ``model`` on ``dist``: one row per explanation
    (``explanations``: names from ``explanation_names()``; default all) with S(π), S(Y | π) and
    the total in bits, each figure's kind and error, the itemised checks with their prior pass
    probabilities, a presumption-free joint figure and Gross et al.'s unexplained dimensionality.

    ``prior``: a ``Prior``, a number of initialisations, or None (``DEFAULT_SAMPLES``), cached
    per config under ``$MAXK_CACHE/surprise`` unless ``cache`` is False (so are the per-model
    weights description and estimator calibration). ``family``: average the table over that many
    noised copies of the model (``maxk.estimators.bench.noised_model``, the k4 noise scales, seeds
    from ``seed``) instead of the model itself, so that an explanation that ignores the weights
    cannot look cheap. Needs exact evaluation (n^k <= 4e9). Cost at n = 64, k = 4, defaults: about
    a minute with the prior and calibration cached (every proof and estimator once, a weights
    search of ``weights_evaluations`` exact evaluations), plus about a minute to build the prior."""
    t0 = time.perf_counter()
    cfg = model.cfg
    d = resolve(dist, cfg.n, cfg.k)
    if d.n_sequences(cfg.n, cfg.k) > EXHAUSTIVE_LIMIT:
        raise MaxkError(f"surprise accounting needs exact evaluation (at most {EXHAUSTIVE_LIMIT:.0e} inputs)")
    if family is not None and family < 1:
        raise MaxkError(f"--family must be at least 1, got {family}")
    if weights_evaluations < 1:
        raise MaxkError(f"the weights search needs at least 1 evaluation, got {weights_evaluations}")
    names = _check_names(explanations)
    pr = resolve_prior(prior, cfg, d.name, cache)
    say = progress or (lambda s: None)
    base = _Context(model, d, pr, calibration_models, weights_evaluations, cache)
    calib = {
        "models": calibration_models,
        "noise_scales": list(SIGMAS["k4"]),
        "method": "errors estimate - exact soft accuracy on noised copies of the model; predictive "
        "Normal(estimate - mean error, sd of errors), sd floored at 1/N, window 1/N",
    }
    if family is None:
        rows, refused = _rows(base, names, say)
        row_dicts, fam = [r.to_dict() for r in rows], None
        observed = base.observed()
    else:
        sigmas = family_sigmas(family, *SIGMAS["k4"])
        members, refused, obs = [], {}, []
        for j, s in enumerate(sigmas):
            member = noised_model(model, float(s), seed * 100_003 + 50_000 + j)
            ctx = _Context(member, d, pr, calibration_models, weights_evaluations, cache, calibrate_on=base)
            rows, ref = _rows(ctx, names, lambda nm, j=j: say(f"model {j + 1}/{family}: {nm}"))
            members.append(rows)
            refused.update(ref)
            obs.append(ctx.observed())
        row_dicts = _mean_rows(members)
        fam = {"models": family, "noise_scales": [float(s) for s in sigmas], "observed": obs}
        observed = {key: float(np.mean([o[key] for o in obs])) for key in ("correct", "accuracy", "soft_accuracy")}
        observed["n_sequences"] = base.N
    return SurpriseTable(
        method="surprise",
        dist=d.name,
        n_sequences=base.N,
        seconds=time.perf_counter() - t0,
        options={
            "explanations": names,
            "family": family,
            "calibration_models": calibration_models,
            "weights_evaluations": weights_evaluations,
            "prior_samples": pr.samples,
        },
        rows=row_dicts,
        observed=observed,
        prior=pr.summary(),
        calibration=calib,
        family=fam,
        refused=refused,
    )
