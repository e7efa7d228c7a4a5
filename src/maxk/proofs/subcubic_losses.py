"""Where the subcubic proof loses: a ladder of float64 experiments (not proofs) that tighten one
term of the argument at a time, and the inputs each rung certifies that the previous did not.

The subcubic check (``maxk.proofs.subcubic``) certifies, per (max m, query q), every input whose
non-max tokens are all <= a threshold T, by bounding for every output o != m

    F(o) = Σ_i w_i · (Dd[q, o] + Vd[x_i, o] + Pd[i, o]),   w_i = exp(score_i),
    Dd = EUPU[q, o] − EUPU[q, m],  Vd = EVOU[t, o] − EVOU[t, m],  Pd = PVOU[i, o] − PVOU[i, m]

from above by the worst arrangement Σ_i max(neg_i, pos_i). It relaxes F in six ways, each a
flag of ``Relaxation``:

    eqke      the EQKE scores come from the low-rank enclosure (an error term) instead of the table
    token     a non-max position takes the largest weight over t <= T times the largest value over
              t <= T, possibly from two different tokens (NS[q, T] · NW[T, m])
    evou      Vd[t, o] is replaced by its worst output, max_{o'} Vd[t, o'] (decoupled output)
    direct    Dd[q, o] likewise (the direct path)
    pvou      Pd[i, o] likewise (the positional value term)
    copies    one threshold covers every number c of non-max positions at once (the worst c),
              instead of one threshold per c

("worst output" means over the side of o, o < m or o > m, for ``split``.) With every flag off the
check is exact: for one output o the worst input of a threshold set is the per-position worst,
so the last rung is the best any threshold-set argument can do, and what it misses is the gap
itself (correct inputs with a non-max token above every certifiable threshold). Every rung is at
least as tight as the one before, so its certified set contains the previous one's and the
increments add up: each uncertified input is attributed to the first rung that certifies it.

These are experiments in float64 with the float circuit tables (no enclosure, EQKP exact), not
proofs; rung 0 ("as proved") redoes the proof's own check in float and is compared with the
proof's count (``LossLadder.proof``) as a consistency check.

Cost: O(n⁴·k) float64 operations (every (m, q, T, o) at once, per max token m), O(n³·k) memory
per m; seconds at n = 64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..circuits import circuit_tables
from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..exact import evaluate
from ..flops import FlopCounter
from .common import require_single_head
from .lowrank import eqke_meandiff, eqke_svd, qk_pieces
from .registry import prove

__all__ = ["Relaxation", "LADDER", "COUPLING", "LossLadder", "coupling_study", "loss_ladder", "threshold_counts"]


@dataclass(frozen=True)
class Relaxation:
    """Which terms are bounded as the subcubic proof bounds them (True) or taken exactly (False)."""

    eqke: bool = True
    token: bool = True
    evou: bool = True
    direct: bool = True
    pvou: bool = True
    copies: bool = True
    # with ``evou``, which positions' value takes its worst output: the query's, the max copies',
    # the non-max tokens' (``coupling_study`` takes them one at a time)
    evou_query: bool = True
    evou_max: bool = True
    evou_tokens: bool = True


PROOF = Relaxation()
EXACT = Relaxation(False, False, False, False, False, False)

# (term, what tightening it means), in the order the ladder tightens them
TERMS = (
    ("eqke", "EQKE error term: the float table instead of the low-rank enclosure"),
    ("token", "non-max token: weight and value from the same token (not NS·NW)"),
    ("evou", "EVOU: exact over outputs (not each token's worst output)"),
    ("direct", "direct path: exact over outputs"),
    ("pvou", "PVOU (positional value): exact over outputs"),
    ("copies", "one threshold per number of non-max positions"),
)
LADDER: tuple[tuple[str, Relaxation], ...] = tuple(
    ("as proved" if j == 0 else TERMS[j - 1][0], Relaxation(**{t: j <= i for i, (t, _) in enumerate(TERMS)}))
    for j in range(len(TERMS) + 1)
)


@dataclass(frozen=True)
class LossLadder:
    """The study of one model: counts of certified inputs per rung (cumulative tightening) and
    per single term (every other term exact, this one as proved).

    rungs:        [(rung name, certified count)], LADDER's order; rung 0 is the proof's check in
                  float, rung j additionally takes TERMS[j-1] exactly
    leave_one_in: {term: certified count with only that term as proved}
    proof:        the proof's own certified count (``prove(model, strategy)``)
    cubic:        the cubic proof's certified count
    correct:      exact number of correct inputs
    n_sequences:  N
    """

    strategy: str
    dist: str
    rungs: tuple[tuple[str, int], ...]
    leave_one_in: dict[str, int]
    proof: int
    cubic: int
    correct: int
    n_sequences: int

    def shares(self) -> dict[str, float]:
        """Share of the proof's loss (correct − proof, in inputs) attributed to each term by the
        ladder (rung j − rung j−1), plus "gap" (correct − last rung) and "float" (rung 0 − proof:
        the proof's rounding and enclosure of everything but EQKE; ~0)."""
        loss = max(self.correct - self.proof, 1)
        out = {"float": (self.rungs[0][1] - self.proof) / loss}
        for (_, a), (name, b) in zip(self.rungs, self.rungs[1:], strict=False):
            out[name] = (b - a) / loss
        out["gap"] = (self.correct - self.rungs[-1][1]) / loss
        return out

    def to_dict(self) -> dict:
        """Plain data (``shares()`` included)."""
        return {**asdict(self), "shares": self.shares()}


def _side_max(x: np.ndarray, m: int, split: bool) -> np.ndarray:
    """x [..., n] over outputs: each entry o != m replaced by the max over its side's outputs
    (all o != m, or o < m / o > m with ``split``); column m is left as it was."""
    n = x.shape[-1]
    out = x.copy()
    sides = [np.arange(n) != m] if not split else [np.arange(n) < m, np.arange(n) > m]
    for s in sides:
        if s.any():
            out[..., s] = x[..., s].max(axis=-1, keepdims=True)
    return out


def _upper(w_lo: np.ndarray, w_hi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Largest w·x for w in [w_lo, w_hi] (w >= 0)."""
    return np.where(x > 0, w_hi * x, w_lo * x)


def threshold_counts(
    tab, scores: tuple[np.ndarray, np.ndarray], relax: Relaxation, dist: Distribution, split: bool = False
) -> int:
    """Certified count of the float check with relaxation ``relax`` (module docstring): per
    (m, q) the largest threshold T (per number of non-max positions c, unless ``relax.copies``)
    whose worst input is correct, counted with the distribution's exact counts.

    tab: float64 ``CircuitTables`` (single head); scores: (lo, hi) [n_q, n_key] EQKE bounds used
    when ``relax.eqke`` (else the table's EQKE). Cost O(n⁴·k)."""
    n, k = tab.n, tab.k
    f = k - 1
    eqkp, evou, pvou, eupu = tab.eqkp[0], tab.evou[0], tab.pvou[0], tab.eupu
    s_lo, s_hi = scores if relax.eqke else (tab.eqke[0], tab.eqke[0])
    ref = (s_hi.max(axis=1) + eqkp.max(axis=1))[:, None]
    w_lo = np.exp(s_lo[:, :, None] + eqkp[:, None, :] - ref[:, :, None])  # [q, t, i]
    w_hi = np.exp(s_hi[:, :, None] + eqkp[:, None, :] - ref[:, :, None])
    total = 0
    for m in range(n):
        q_ = np.arange(m + 1)
        Dd = eupu[q_] - eupu[q_, m : m + 1]  # [q, o]
        Vd = evou - evou[:, m : m + 1]  # [t, o]
        Pd = pvou - pvou[:, m : m + 1]  # [i, o]
        if relax.direct:
            Dd = _side_max(Dd, m, split)
        Vs = _side_max(Vd, m, split) if relax.evou else Vd
        Vq_all = Vs if relax.evou_query else Vd
        Vm_all = Vs if relax.evou_max else Vd
        Vd = Vs if relax.evou_tokens else Vd
        if relax.pvou:
            Pd = _side_max(Pd, m, split)
        others = np.arange(n) != m  # the outputs a check ranges over
        Dd, Vd, Pd = Dd[:, others], Vd[:, others], Pd[:, others]
        Vq_all, Vm_all = Vq_all[:, others], Vm_all[:, others]
        wq = (w_lo[q_, q_, f], w_hi[q_, q_, f])  # [q]
        qterm = _upper(wq[0][:, None], wq[1][:, None], Dd + Vq_all[q_] + Pd[f])  # [q, o]
        if f == 0:
            ok = (qterm.max(axis=1) < 0) & (q_ == m)
            total += sum(dist.count_below(k, m, int(q), -1) for q in q_[ok])
            continue
        xm = Dd[:, None, :] + Vm_all[m][None, None, :] + Pd[None, :f, :]  # [q, i, o]
        neg = _upper(w_lo[q_, m, :f][:, :, None], w_hi[q_, m, :f][:, :, None], xm)
        x = Dd[:, None, None, :] + Vd[:m, None, :][None] + Pd[None, None, :f, :]  # [q, t, i, o]
        if relax.token:
            wmax = np.maximum.accumulate(w_hi[q_, :m, :f], axis=1)  # [q, T, i]
            xmax = np.maximum.accumulate(x, axis=1)
            pos = np.maximum(0.0, wmax[..., None] * xmax)  # the proof's w in [0, max w]
        else:
            pos = np.maximum.accumulate(
                _upper(w_lo[q_, :m, :f][..., None], w_hi[q_, :m, :f][..., None], x), axis=1
            )  # [q, T, i, o]
        base = qterm + neg.sum(axis=1)  # [q, o]: every free position holds m
        if relax.copies:
            total += _count_any_copies(base, qterm, neg, pos, m, k, dist)
        else:
            total += _count_per_copies(base, neg, pos, m, k, dist)
    return total


def _first_failure(passed: np.ndarray) -> np.ndarray:
    """passed [q, T] (monotone: true up to some T) -> the largest passing T, −1 if none."""
    if passed.shape[1] == 0:
        return np.full(passed.shape[0], -1)
    return np.where(passed.all(axis=1), passed.shape[1] - 1, passed.argmin(axis=1) - 1)


def _count_any_copies(base, qterm, neg, pos, m, k, dist) -> int:
    """The proof's set: every non-max token <= T at any number of positions."""
    gain = np.maximum(pos - neg[:, None], 0.0)  # [q, T, i, o]
    acc = base[:, None, :] + gain.sum(axis=2)  # [q, T, o]: Σ_i max(neg_i, pos_i)
    q_ = np.arange(m + 1)
    # q < m needs a free copy of m: the worst arrangement puts it where a non-max token would
    # have added least
    forced = acc - gain.min(axis=2)
    acc = np.where((q_ < m)[:, None, None], forced, acc)
    ok0 = base.max(axis=1) < 0  # T = −1: every free position holds m
    T = _first_failure(acc.max(axis=2) < 0)
    total = 0
    for q in q_:
        if ok0[q]:
            total += dist.count_below(k, m, int(q), int(T[q]))
    return total


def _count_per_copies(base, neg, pos, m, k, dist) -> int:
    """One threshold per number c of non-max positions: the c positions where a non-max token
    costs most hold the worst token <= T_c."""
    diff = np.sort(pos - neg[:, None], axis=2)[:, :, ::-1]  # [q, T, i, o], largest first
    csum = np.cumsum(diff, axis=2)
    total = 0
    for q in range(m + 1):
        if dist.max_only_occurs(k, m, q) and base[q].max() < 0:
            total += 1
    for q, cc, arr in dist.nonmax_groups(k, m):
        acc = base[q][None, :] + csum[q, :, cc - 1, :]  # [T, o]
        T = int(_first_failure((acc.max(axis=1) < 0)[None])[0])
        total += arr * dist.count_tokens(np.arange(m) <= T, q, cc)
    return total


# the configurations of ``coupling_study``: (name, Relaxation), EQKE from the table and every
# worst output per side (o < m, o > m) as subcubic-coupled's two side columns
COUPLING = (
    ("every term its own worst output", Relaxation(eqke=False)),
    ("query value exact", Relaxation(eqke=False, evou_query=False)),
    ("max copies' value exact", Relaxation(eqke=False, evou_max=False)),
    ("non-max values exact", Relaxation(eqke=False, evou_tokens=False)),
    ("query and max values exact", Relaxation(eqke=False, evou_query=False, evou_max=False)),
    ("every value exact", Relaxation(eqke=False, evou=False)),
    ("token weight-value pairing exact", Relaxation(eqke=False, token=False)),
    ("values and pairing exact", Relaxation(eqke=False, evou=False, token=False)),
    ("values, pairing and direct path exact", Relaxation(eqke=False, evou=False, token=False, direct=False)),
    ("everything exact", EXACT),
)


def coupling_study(model, dist: str | Distribution = "uniform") -> dict[str, int]:
    """Where ``subcubic-coupled``'s two side columns lose (float64 experiments, as the ladder):
    certified counts of the threshold check with EQKE from the table, every term's worst output
    taken per side of m, and one term or position at a time taken exactly (``COUPLING``). Cost:
    len(COUPLING) float checks of O(n⁴·k) each."""
    require_single_head(model, "coupling_study")
    d = resolve(dist, model.cfg.n, model.cfg.k)
    tab = circuit_tables(model)
    scores = (tab.eqke[0], tab.eqke[0])
    return {name: threshold_counts(tab, scores, r, d, split=True) for name, r in COUPLING}


def _attention_bounds(model, strategy_attention: str) -> tuple[np.ndarray, np.ndarray]:
    c = FlopCounter()
    pieces = qk_pieces(model, c)
    if strategy_attention == "svd":
        e = eqke_svd(pieces, 2, c)
    else:
        e = eqke_meandiff(pieces, c, key_direction=(strategy_attention == "keydir"))
    return e.lo, e.hi


_STRATEGY_SETTINGS = {
    "subcubic": ("keydir", False),
    "subcubic-split": ("keydir", True),
    "subcubic-svd": ("svd", False),
    "subcubic-meandiff": ("meandiff", False),
}


def loss_ladder(
    model, strategy: str = "subcubic", dist: str | Distribution = "uniform", *, correct: int | None = None
) -> LossLadder:
    """The loss study of ``strategy`` (subcubic, subcubic-split, subcubic-svd, subcubic-meandiff)
    on ``model`` (single head): the ladder's counts, the leave-one-in counts, the proof's and the
    cubic proof's counts and the exact number of correct inputs (``correct`` if given, else
    evaluated). Cost: 13 float checks of O(n⁴·k) each, plus the two proofs and one exact
    evaluation."""
    require_single_head(model, "loss_ladder")
    if strategy not in _STRATEGY_SETTINGS:
        raise MaxkError(f"loss_ladder studies {', '.join(_STRATEGY_SETTINGS)}, not {strategy!r}")
    attention, split = _STRATEGY_SETTINGS[strategy]
    d = resolve(dist, model.cfg.n, model.cfg.k)
    tab = circuit_tables(model)
    scores = _attention_bounds(model, attention)
    if correct is None:
        correct = evaluate(model, d).correct
        assert correct is not None  # exhaustive evaluation counts the correct inputs
    rungs = tuple((name, threshold_counts(tab, scores, r, d, split)) for name, r in LADDER)
    loi = {t: threshold_counts(tab, scores, replace(EXACT, **{t: True}), d, split) for t, _ in TERMS}
    return LossLadder(
        strategy=strategy,
        dist=d.name,
        rungs=rungs,
        leave_one_in=loi,
        proof=prove(model, strategy, d).certified,
        cubic=prove(model, "cubic", d).certified,
        correct=correct,
        n_sequences=d.n_sequences(model.cfg.n, model.cfg.k),
    )
