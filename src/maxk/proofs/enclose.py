"""Rigorous enclosures: interval arithmetic with outward rounding, and the circuit tables of
DESIGN §2 enclosed from the checkpoint's float32 weights.

Every proof strategy works from ``enclosed_tables(model)``: for each table X, ``tab.lo.X <= X <=
tab.hi.X`` holds entrywise for the *exact real-number* table computed from the weights (read
exactly as float32 -> float64) with the exact scale 1/sqrt(d_head) (or 1/attn_scale).

How rounding is enclosed (float64, round-to-nearest, as numpy and BLAS run it):

* one elementwise operation (+, -, *): the float result is within half an ulp of the exact
  result, so one ``nextafter`` step outward encloses it (``down``/``up``), subnormals included;
* a matrix product C = A @ B with inner dimension p, in any summation order:
  |fl(C) - C| <= gamma_p |A| |B| + p * eta, gamma_p = p*u/(1 - p*u), u = 2^-53, eta = 2^-1074
  (the underflow term); the bound is itself computed with upward rounding (``matmul_abs_up``);
* exp: numpy's exp is accurate to a few ulps; we allow a relative error of EXP_REL = 2^-40
  (about 8000 ulps) plus 16 subnormal ulps absolute, and round outward after that;
* 1/sqrt(d_head) is enclosed by two floats s_lo <= s <= s_hi checked with exact rational
  arithmetic (s_lo^2 * d_head <= 1 <= s_hi^2 * d_head); a custom divisor a (TransformerLens'
  ``attn_scale``) likewise by s_lo * a <= 1 <= s_hi * a.

Intervals are ``Interval(lo, hi)`` with float64 arrays; the helpers take a ``FlopCounter`` and add
the operations they perform (an outward rounding step counts as one operation, label
"rounding"). python-flint ``arb`` balls check all of this independently in the tests.

Public API (stable; other strategies build on it):
    Interval, point, down, up, add, sub, mul, mul_scalar, exp, matmul, matmul_abs_up,
    mul_lower, mul_upper, sum_lower, transpose_last, gamma, attn_scale_interval, IntervalTables,
    enclosed_tables
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import sqrt

import numpy as np
import torch

from ..circuits import CircuitTables
from ..config import ModelConfig, ShapeOfConfig
from ..errors import MaxkError
from ..flops import FlopCounter

U = 2.0**-53  # unit roundoff of float64
ETA = 2.0**-1074  # smallest positive subnormal
EXP_REL = 2.0**-40  # relative error allowed for np.exp (generous: ~8000 ulps)
_INF = np.inf


def _c(counter: FlopCounter | None) -> FlopCounter:
    return counter if counter is not None else FlopCounter()


def gamma(p: int) -> float:
    """An upper bound (as a float) on gamma_p = p*u/(1 - p*u), the a-priori relative error of a
    p-term dot product. Raises if p*u is not small."""
    if p * U >= 0.01:
        raise MaxkError(f"inner dimension {p} too large for the a-priori rounding bound")
    return float(np.nextafter(1.01 * p * U / (1.0 - p * U), _INF))


# Large arrays step through torch.nextafter (the same IEEE operation as np.nextafter, about 4x
# faster, and able to write into a temporary), in pieces of torch's grain size, which torch does
# not split over threads (on a loaded machine its thread pool made the cubic proof twice as slow);
# below _TORCH_MIN elements np.nextafter costs less than the torch call.
_TORCH_MIN = 1 << 12
_SERIAL = 1 << 15
_TOWARD = {-_INF: torch.tensor(-_INF, dtype=torch.float64), _INF: torch.tensor(_INF, dtype=torch.float64)}


def _step(x, toward: float, counter: FlopCounter | None, inplace: bool) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    _c(counter).add(a.size, "rounding")
    if a.size < _TORCH_MIN:
        return np.nextafter(a, toward)
    if not (inplace and a.flags.writeable and a.flags.c_contiguous and a.base is None):
        a = np.array(a, dtype=np.float64, order="C")
    t, to = torch.from_numpy(a).view(-1), _TOWARD[toward]
    for s in range(0, t.numel(), _SERIAL):
        piece = t[s : s + _SERIAL]
        torch.nextafter(piece, to, out=piece)
    return a


def down(x, counter: FlopCounter | None = None, *, inplace: bool = False) -> np.ndarray:
    """Next float below x (elementwise): encloses from below the exact result of the one
    round-to-nearest operation that produced x. ``inplace``: x is a temporary the caller no
    longer needs, rounded in place when it owns its memory. Cost: one op per element."""
    return _step(x, -_INF, counter, inplace)


def up(x, counter: FlopCounter | None = None, *, inplace: bool = False) -> np.ndarray:
    """Next float above x (elementwise); ``inplace`` as for ``down``. Cost: one op per element."""
    return _step(x, _INF, counter, inplace)


@dataclass(frozen=True)
class Interval:
    """An array of closed intervals [lo, hi] (float64 arrays of one shape), lo <= hi."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.lo.shape

    @property
    def width(self) -> np.ndarray:
        """hi - lo (rounded up)."""
        return np.nextafter(self.hi - self.lo, _INF)

    def __getitem__(self, idx) -> Interval:
        return Interval(self.lo[idx], self.hi[idx])

    def contains(self, x) -> np.ndarray:
        """Elementwise lo <= x <= hi."""
        x = np.asarray(x, dtype=np.float64)
        return (self.lo <= x) & (x <= self.hi)


def point(x) -> Interval:
    """The degenerate interval [x, x] of a float64 array (float32 input converts exactly)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    a = np.array(x, dtype=np.float64)
    return Interval(a, a.copy())


def add(a: Interval, b: Interval, counter: FlopCounter | None = None) -> Interval:
    """a + b, outward rounded. Cost: 2 adds + 2 roundings per element."""
    c = _c(counter)
    lo, hi = np.broadcast_arrays(a.lo + b.lo, a.hi + b.hi)
    c.add(2 * lo.size, "interval add")
    return Interval(down(lo, c), up(hi, c))


def sub(a: Interval, b: Interval, counter: FlopCounter | None = None) -> Interval:
    """a - b, outward rounded. Cost: 2 subtractions + 2 roundings per element."""
    c = _c(counter)
    lo, hi = np.broadcast_arrays(a.lo - b.hi, a.hi - b.lo)
    c.add(2 * lo.size, "interval add")
    return Interval(down(lo, c), up(hi, c))


def mul(a: Interval, b: Interval, counter: FlopCounter | None = None) -> Interval:
    """a * b (elementwise, broadcasting), outward rounded: min/max of the four endpoint products.
    Cost: 4 products, 6 comparisons, 2 roundings per element."""
    c = _c(counter)
    p = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    lo = np.minimum(np.minimum(p[0], p[1]), np.minimum(p[2], p[3]))
    hi = np.maximum(np.maximum(p[0], p[1]), np.maximum(p[2], p[3]))
    c.add(10 * lo.size, "interval mul")
    return Interval(down(lo, c), up(hi, c))


def mul_scalar(a: Interval, s: Interval, counter: FlopCounter | None = None) -> Interval:
    """a * s for a scalar interval s (0-d arrays), outward rounded. Cost as ``mul``."""
    return mul(a, s, counter)


def mul_lower(x_lo, x_hi, y_lo, counter: FlopCounter | None = None) -> np.ndarray:
    """A float lower bound on x*y for x in [x_lo, x_hi] with x_lo >= 0 and y >= y_lo: the
    product of y_lo with x_lo if y_lo >= 0 else with x_hi, rounded down.
    Cost: 1 product, 1 select, 1 rounding per element."""
    c = _c(counter)
    x = np.where(y_lo >= 0, x_lo, x_hi)
    r = x * y_lo
    c.add(2 * r.size, "lower mul")
    return down(r, c, inplace=True)


def mul_upper(x_lo, x_hi, y_hi, counter: FlopCounter | None = None) -> np.ndarray:
    """A float upper bound on x*y for x in [x_lo, x_hi] with x_lo >= 0 and y <= y_hi.
    Cost: 1 product, 1 select, 1 rounding per element."""
    c = _c(counter)
    x = np.where(y_hi >= 0, x_hi, x_lo)
    r = x * y_hi
    c.add(2 * r.size, "upper mul")
    return up(r, c, inplace=True)


def sum_lower(terms: list, counter: FlopCounter | None = None) -> np.ndarray:
    """A float lower bound on the exact sum of the (broadcast) arrays in ``terms``: added left to
    right, rounding down after each addition. Cost: 2 ops per addition per element."""
    c = _c(counter)
    acc = np.asarray(terms[0], dtype=np.float64)
    for t in terms[1:]:
        s = acc + t
        c.add(s.size, "lower sum")
        acc = down(s, c, inplace=True)
    return acc


def exp(a: Interval, counter: FlopCounter | None = None) -> Interval:
    """exp(a), outward rounded (allowing np.exp a relative error EXP_REL plus 16 subnormal ulps).
    Cost: 2 exps and 6 ops per element."""
    c = _c(counter)
    elo, ehi = np.exp(a.lo), np.exp(a.hi)
    c.add(2 * elo.size, "exp")
    lo = np.maximum(down(elo * (1.0 - EXP_REL) - 16 * ETA, c), 0.0)
    hi = up(ehi * (1.0 + EXP_REL) + 16 * ETA, c)
    c.add(4 * elo.size, "exp enclosure")
    return Interval(lo, hi)


def matmul_abs_up(a: np.ndarray, b: np.ndarray, counter: FlopCounter | None = None) -> np.ndarray:
    """A float upper bound on the exact product a @ b of entrywise nonnegative arrays (batched
    over leading dims as np.matmul). Cost: one matmul plus 3 ops per output element."""
    c = _c(counter)
    p = a.shape[-1]
    r = np.matmul(a, b)
    c.matmul(int(np.prod(r.shape[:-1], dtype=np.int64)), p, r.shape[-1], "matmul")
    # exact <= fl/(1 - gamma_p) + p*eta <= fl*(1 + 2 gamma_p) + p*eta
    out = up(r * (1.0 + 2.0 * gamma(p)) + p * ETA, c)
    c.add(2 * r.size, "matmul enclosure")
    return out


def _mid_rad(a: Interval, c: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint m and radius r (rounded up) with a ⊆ [m - r, m + r]."""
    if a.lo is a.hi or np.array_equal(a.lo, a.hi):
        return a.lo, np.zeros_like(a.lo)
    m = 0.5 * a.lo + 0.5 * a.hi  # no overflow; fl(m) may be off: the radius covers both ends
    r = np.maximum(up(a.hi - m, c), up(m - a.lo, c))
    c.add(5 * m.size, "mid-rad")
    return m, r


def matmul(a: Interval, b: Interval, counter: FlopCounter | None = None) -> Interval:
    """a @ b for interval matrices (batched as np.matmul), outward rounded, in midpoint-radius
    form: mid = fl(ma @ mb), rad >= gamma_p |ma||mb| + |ma| rb + ra (|mb| + rb) + p*eta.
    Cost: 1 matmul for points, 3 matmuls when an operand has nonzero width, plus O(size)."""
    c = _c(counter)
    ma, ra = _mid_rad(a, c)
    mb, rb = _mid_rad(b, c)
    p = ma.shape[-1]
    mid = np.matmul(ma, mb)
    c.matmul(int(np.prod(mid.shape[:-1], dtype=np.int64)), p, mid.shape[-1], "matmul")
    g = gamma(p)
    abs_ma, abs_mb = np.abs(ma), np.abs(mb)
    c.add(abs_ma.size + abs_mb.size, "abs")
    right = up(abs_mb * g + rb, c)  # g|mb| + rb, nonneg
    c.add(2 * right.size, "matmul enclosure")
    rad = matmul_abs_up(abs_ma, right, c)
    if np.any(ra):
        rad = up(rad + matmul_abs_up(ra, up(abs_mb + rb, c), c), c)
        c.add(rad.size + abs_mb.size, "matmul enclosure")
    rad = up(rad + p * ETA, c)
    c.add(rad.size, "matmul enclosure")
    lo, hi = down(mid - rad, c), up(mid + rad, c)
    c.add(2 * mid.size, "matmul enclosure")
    return Interval(lo, hi)


def transpose_last(a: Interval) -> Interval:
    """Swap the last two axes (no arithmetic)."""
    return Interval(np.swapaxes(a.lo, -1, -2), np.swapaxes(a.hi, -1, -2))


def attn_scale_interval(cfg: ModelConfig) -> Interval:
    """Floats s_lo <= s <= s_hi around the exact factor s multiplying q·k: 1/sqrt(d_head) by
    default, 1/a for a custom divisor ``cfg.attn_scale = a``, 1 without ``use_attn_scale``;
    verified with exact rational arithmetic. Returns a 0-d Interval. Cost: O(1)."""
    if not cfg.use_attn_scale:
        return point(np.float64(1.0))
    if cfg.attn_scale is not None:
        return _reciprocal_interval(cfg.attn_scale)
    d = cfg.d_head
    s = 1.0 / sqrt(d)
    lo = hi = s
    while Fraction(lo) ** 2 * d > 1:
        lo = float(np.nextafter(lo, -_INF))
    while Fraction(hi) ** 2 * d < 1:
        hi = float(np.nextafter(hi, _INF))
    return Interval(np.array(lo), np.array(hi))


def _reciprocal_interval(a: float) -> Interval:
    """Floats lo <= 1/a <= hi for a float a > 0, checked exactly (lo*a <= 1 <= hi*a in rationals)."""
    fa = Fraction(a)
    lo = hi = 1.0 / a
    while Fraction(lo) * fa > 1:
        lo = float(np.nextafter(lo, -_INF))
    while Fraction(hi) * fa < 1:
        hi = float(np.nextafter(hi, _INF))
    return Interval(np.array(lo), np.array(hi))


@dataclass(frozen=True)
class IntervalTables(ShapeOfConfig):
    """Entrywise enclosures of the exact circuit tables: ``lo.X <= X <= hi.X`` for X in eqke
    [h, n, n], eqkp [h, n, k], evou [h, n, n], pvou [h, k, n], eupu [n, n]. ``lo`` and ``hi`` are
    ordinary ``CircuitTables`` (so ``lo.logits`` etc. work, as floats)."""

    cfg: ModelConfig
    lo: CircuitTables
    hi: CircuitTables

    NAMES = ("eqke", "eqkp", "evou", "pvou", "eupu")

    def interval(self, name: str) -> Interval:
        """The enclosure of one table as an Interval, e.g. ``tab.interval("eqke")``."""
        return Interval(getattr(self.lo, name), getattr(self.hi, name))

    def max_width(self) -> float:
        """Largest hi - lo over all tables (how much the enclosure loses; ~1e-14 typically)."""
        return max(float(np.max(getattr(self.hi, x) - getattr(self.lo, x))) for x in self.NAMES)


def _weights(model) -> dict[str, Interval]:
    return {name: point(p) for name, p in model.named_parameters()}


def enclosed_tables(model, counter: FlopCounter | None = None) -> IntervalTables:
    """Enclose the exact circuit tables of ``model`` (DESIGN §2) from its float32 weights.

    Same formulas as ``maxk.circuits.circuit_tables``, in interval arithmetic. Raises MaxkError if
    an enclosure is not finite. Cost: O(h·(n·d·dh + n²·dh + dh·d·n + n²·dh)) for the products
    (about 3x the float tables' cost, since each product also bounds its rounding error).
    """
    c = _c(counter)
    cfg: ModelConfig = model.cfg
    w = _weights(model)
    for name, iv in w.items():
        if not np.all(np.isfinite(iv.lo)):
            raise MaxkError(f"weight {name} has NaN or Inf entries: cannot enclose the circuit tables")
    with np.errstate(all="ignore"):  # overflow shows up as a non-finite table, checked below
        parts = _enclose(cfg, w, c)
    for name, iv in parts.items():
        if not (np.all(np.isfinite(iv.lo)) and np.all(np.isfinite(iv.hi))):
            raise MaxkError(f"circuit table {name} overflows float64: cannot enclose it")
    lo = CircuitTables(cfg, *(parts[x].lo for x in IntervalTables.NAMES))
    hi = CircuitTables(cfg, *(parts[x].hi for x in IntervalTables.NAMES))
    return IntervalTables(cfg, lo, hi)


def _enclose(cfg: ModelConfig, w: dict[str, Interval], c: FlopCounter) -> dict[str, Interval]:
    E, P = w["embed.W_E"], w["pos_embed.W_pos"]
    WQ, WK, WV, WO = (w[f"blocks.0.attn.W_{x}"] for x in "QKVO")
    bQ, bK, bV, bO = (w[f"blocks.0.attn.b_{x}"] for x in "QKVO")
    WU, bU = w["unembed.W_U"], w["unembed.b_U"]
    last = cfg.n_ctx - 1
    s = attn_scale_interval(cfg)
    resq = add(E, P[last], c)  # [n, d]
    eqke, eqkp, evou, pvou = [], [], [], []
    for h in range(cfg.n_heads):
        query = add(matmul(resq, WQ[h], c), bQ[h], c)  # [n, dh]
        key_tok = matmul(E, WK[h], c)  # [n, dh]
        key_pos = add(matmul(P, WK[h], c), bK[h], c)  # [k, dh]
        sq = mul_scalar(query, s, c)
        eqke.append(matmul(sq, transpose_last(key_tok), c))
        eqkp.append(matmul(sq, transpose_last(key_pos), c))
        ou = matmul(WO[h], WU, c)  # [dh, n]
        ev = add(matmul(E, WV[h], c), bV[h], c)  # [n, dh]
        evou.append(matmul(ev, ou, c))
        pvou.append(matmul(matmul(P, WV[h], c), ou, c))
    eupu = add(add(matmul(resq, WU, c), matmul(Interval(bO.lo[None], bO.hi[None]), WU, c), c), bU, c)

    def stack(xs: list[Interval]) -> Interval:
        return Interval(np.stack([x.lo for x in xs]), np.stack([x.hi for x in xs]))

    return {"eqke": stack(eqke), "eqkp": stack(eqkp), "evou": stack(evou), "pvou": stack(pvou), "eupu": eupu}
