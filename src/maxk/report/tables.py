"""The report's numbers: per configuration, mean ± std over seeds of accuracy, of each proof's
relative bound (bound / evaluated accuracy) and FLOPs, of each estimator's error (estimate −
evaluated soft accuracy) and FLOPs; the paper families; the Pareto frontier. Pure functions of
the parsed runs (``maxk.report.runs``); cost linear in the number of records."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..results import Estimate, ProofResult
from .paper import Family
from .runs import ConfigRuns, Refusal, SeedRun


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for fewer than two values) of ``count`` values."""

    mean: float
    std: float | None
    count: int

    def fmt(self, digits: int = 4, spec: str = "f") -> str:
        """``0.9541 ± 0.0080`` (or just the mean for one value); ``spec`` "g" for figures of any
        magnitude."""
        if self.std is None:
            return f"{self.mean:.{digits}{spec}}"
        return f"{self.mean:.{digits}{spec}} ± {self.std:.{digits}{spec}}"


def stat(values: Iterable[float | None]) -> Stat | None:
    """``Stat`` of the finite values (None and NaN dropped); None when there is none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    mean = math.fsum(xs) / len(xs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Stat(mean, std, len(xs))


def log2_flops(flops: int | None) -> float | None:
    """log2 of a FLOP count (None when not counted; 0 FLOPs counts as 2^0)."""
    return None if flops is None else math.log2(max(int(flops), 1))


@dataclass(frozen=True)
class MethodSummary:
    """One proof strategy or estimator over a configuration's seeds.

    value:    proofs: relative bound; estimators: signed error (estimate − soft accuracy)
    abs_error / rmse: estimators only (None for proofs)
    log2_flops: of the method's counted FLOPs; seconds: its wall time
    refused:  how many seeds recorded a refusal, with the distinct reasons
    """

    method: str
    value: Stat | None
    abs_error: Stat | None
    rmse: float | None
    log2_flops: Stat | None
    seconds: Stat | None
    refused: int
    reasons: tuple[str, ...]

    @property
    def ran(self) -> int:
        return 0 if self.value is None else self.value.count


def _refusals(items: Sequence[object]) -> tuple[int, tuple[str, ...]]:
    reasons = [x.reason for x in items if isinstance(x, Refusal)]
    return len(reasons), tuple(dict.fromkeys(reasons))


def proof_summary(conf: ConfigRuns, method: str) -> MethodSummary:
    """Relative bound, FLOPs and time of proof ``method`` over ``conf``'s seeds."""
    got = [s.proofs.get(method) for s in conf.seeds]
    ran = [(s, p) for s, p in zip(conf.seeds, got, strict=True) if isinstance(p, ProofResult)]
    n_ref, reasons = _refusals(got)
    return MethodSummary(
        method,
        stat(s.relative_bound(method) for s, _ in ran),
        None,
        None,
        stat(log2_flops(p.flops) for _, p in ran),
        stat(p.seconds for _, p in ran),
        n_ref,
        reasons,
    )


def estimator_summary(conf: ConfigRuns, method: str) -> MethodSummary:
    """Signed error, |error|, RMSE, FLOPs and time of estimator ``method`` over ``conf``'s seeds."""
    got = [s.estimates.get(method) for s in conf.seeds]
    ran = [(s, e) for s, e in zip(conf.seeds, got, strict=True) if isinstance(e, Estimate)]
    errs = [s.estimate_error(method) for s, _ in ran]
    n_ref, reasons = _refusals(got)
    finite = [e for e in errs if e is not None and math.isfinite(e)]
    return MethodSummary(
        method,
        stat(errs),
        stat(abs(e) for e in finite),
        math.sqrt(math.fsum(e * e for e in finite) / len(finite)) if finite else None,
        stat(log2_flops(e.flops) for _, e in ran),
        stat(e.seconds for _, e in ran),
        n_ref,
        reasons,
    )


def family_best(seed: SeedRun, family: Family) -> tuple[float, ProofResult] | None:
    """The best relative bound among ``family``'s members that ran on ``seed`` and its proof."""
    best: tuple[float, ProofResult] | None = None
    for m in family.members:
        rel, p = seed.relative_bound(m), seed.proofs.get(m)
        if rel is not None and isinstance(p, ProofResult) and (best is None or rel > best[0]):
            best = (rel, p)
    return best


def family_summary(conf: ConfigRuns, family: Family) -> tuple[Stat | None, Stat | None]:
    """Mean ± std over seeds of the family's best relative bound per seed, and of that proof's
    log2 FLOPs (the paper's per-family row)."""
    best = [b for s in conf.seeds if (b := family_best(s, family)) is not None]
    return stat(rel for rel, _ in best), stat(log2_flops(p.flops) for _, p in best)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, value) no other point beats (cost no higher and value no
    lower, one strictly), ordered by cost: the frontier of bound against FLOPs. O(p log p)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def wick_summary(conf: ConfigRuns) -> dict[str, Stat] | None:
    """Mean ± std over the seeds that have a Wick summary of each of its numeric figures (None
    when no seed has one)."""
    with_wick = [s.wick for s in conf.seeds if s.wick is not None]
    if not with_wick:
        return None
    keys = list(dict.fromkeys(k for w in with_wick for k, v in w.items() if isinstance(v, (int, float))))
    out = {}
    for k in keys:
        st = stat(float(w[k]) for w in with_wick if isinstance(w.get(k), (int, float)) and not isinstance(w[k], bool))
        if st is not None:
            out[k] = st
    return out


def frontier_family(conf: ConfigRuns) -> dict | None:
    """The estimator frontier over ``conf``'s seeds that ran ``--with frontier``: a family record
    (``estimators.frontier.family_from_models``) whose truth per seed is its evaluated soft
    accuracy (with its standard error where sampled), so each row has RMSE over seeds, mean
    FLOPs and Monte Carlo's RMSE at those FLOPs. None when no seed has one."""
    from ..estimators.frontier import family_from_models

    models = [
        (s.eval.soft_accuracy, (s.eval.spread or {}).get("soft_accuracy", 0.0), s.frontier)
        for s in conf.seeds
        if s.frontier is not None
    ]
    if not models:
        return None
    return family_from_models(conf.label, conf.seeds[0].dist, models)
