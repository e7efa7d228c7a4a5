"""Rigorous enclosures of EQKE that never form the full d-dimensional n×n product.

EQKE[q, t] = s · Qt[q] · Kt[t] with the query side Qt = (E + P[last]) W_Q + b_Q [n, dh], the
key side Kt = E W_K [n, dh] and s = 1/sqrt(d_head). Two forms, each a cheap main term plus an
entrywise error bound of rank one (or two), so the n×n enclosure costs O(n²·r) on top of the
O(n·d·dh + n·dh²) pieces instead of the O(n²·dh) product:

* ``eqke_svd``: main term of rank r from the SVD of the product. For float dh×dh matrices L, R
  (L Rᵀ ≈ I; the columns of Qt L and Kt R are the singular directions, balanced),
      Qt Ktᵀ = (Qt L)(Kt R)ᵀ + Qt Δ Ktᵀ,   Δ = I − L Rᵀ (exactly, as real numbers),
      |Σ_{j>r} (Qt L)[q, j] (Kt R)[t, j]| <= α_q β_t   (Cauchy–Schwarz over the tail columns),
      |Qt[q] Δ Kt[t]| <= ||Qt[q] Δ|| · ||Kt[t]||,
  with α_q = ||(Qt L)[q, r:]||, β_t = ||(Kt R)[t, r:]||. L and R need not be accurate: any float
  matrices give a valid bound (an inaccurate L Rᵀ only makes Δ and the bound larger).
* ``eqke_meandiff``: "mean + per-row difference". With float vectors μ_Q, μ_K (the mean rows),
  δ_q = Qt[q] − μ_Q and δK_t = Kt[t] − μ_K,
      EQKE[q, t] = s μ_Q·δK_t + s δ_q·δK_t + c_q,   c_q = s Qt[q]·μ_K,
  and |δ_q·δK_t| <= ||δ_q||·||δK_t||; optionally the part of δ_q·δK_t along the key direction
  in which keys grow with the token is kept exactly (see the function). Every piece is a
  vector of length n or an [n, dh] matrix: O(n·d·dh) in all, O(n²) for the n×n enclosure.

Both return an enclosure of EQKE − c for some per-query constant c [n] (the SVD form has c = 0).
A constant added to one query's row leaves its softmax unchanged, so a proof that only compares
scores within a row (as ``maxk.proofs.subcubic`` does) may use it in place of EQKE; the docstring
of each function says which it returns. Every floating-point step is enclosed with
``maxk.proofs.enclose`` (outward rounding, a-priori matmul bounds) and counted.
"""

from __future__ import annotations

import numpy as np

from ..flops import FlopCounter
from .enclose import ETA, Interval, add, attn_scale_interval, down, gamma, matmul_abs_up, mul_scalar, point, sub, up

__all__ = ["QKPieces", "qk_pieces", "row_norms_up", "matmul_cs", "eqke_svd", "eqke_meandiff"]


def _mid_rad(a: Interval, counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint m and radius r (rounded up) with a ⊆ [m − r, m + r]; exact for points."""
    if a.lo is a.hi or np.array_equal(a.lo, a.hi):
        return a.lo, np.zeros_like(a.lo)
    m = 0.5 * a.lo + 0.5 * a.hi
    r = np.maximum(up(a.hi - m, counter), up(m - a.lo, counter))
    counter.add(5 * m.size, "mid-rad")
    return m, r


def matmul_cs(a: Interval, b: Interval, counter: FlopCounter) -> Interval:
    """a [n, p] @ b [p, m] enclosed with one float matmul and rank-two error bounds.

    With midpoints/radii (ma, ra), (mb, rb) and c = fl(ma @ mb):
        |a b − c| <= |ma| rb + ra (|mb| + rb) + gamma_p |ma||mb| + p·eta   (entrywise)
    and each |X||Y| entry is bounded by Cauchy–Schwarz, ||X_i||·||Y_j||, so the radius is an
    outer product of row/column norms: ||ma_i||(gamma_p ||mb_j|| + ||rb_j||) + ||ra_i||(||mb_j|| +
    ||rb_j||) + p·eta, rounded up. Looser than ``enclose.matmul`` by at most a factor ~sqrt(p) on
    a radius of ~1e-14 relative, at a third of its cost.
    Cost: one [n, p] @ [p, m] matmul, O((n + m)·p) for the norms, O(n·m) for the radius."""
    ma, ra = _mid_rad(a, counter)
    mb, rb = _mid_rad(b, counter)
    n, p = ma.shape
    c = ma @ mb
    counter.matmul(n, p, c.shape[1], "matmul")
    g = gamma(p)
    zero_a, zero_b = not np.any(ra), not np.any(rb)
    counter.add(ra.size + rb.size, "compare")
    na = row_norms_up(point(ma), counter)
    nra = np.zeros(n) if zero_a else row_norms_up(point(ra), counter)
    nb = row_norms_up(point(mb.T), counter)
    nrb = np.zeros(mb.shape[1]) if zero_b else row_norms_up(point(rb.T), counter)
    left = [na, nra]
    right = [up(up(g * nb, counter) + nrb, counter), up(nb + nrb, counter)]
    counter.add(3 * nb.size, "norm combine")
    rad = up(_outer_up(left, right, counter) + p * ETA, counter)
    counter.add(rad.size, "matmul enclosure")
    out = Interval(down(c - rad, counter), up(c + rad, counter))
    counter.add(2 * c.size, "matmul enclosure")
    return out


class QKPieces:
    """Enclosed query and key sides of head 0: qt, kt [n, dh] Intervals, s the scale (0-d)."""

    def __init__(self, qt: Interval, kt: Interval, s: Interval):
        self.qt, self.kt, self.s = qt, kt, s


def qk_pieces(model, counter: FlopCounter) -> QKPieces:
    """Enclose Qt = (E + P[last]) W_Q + b_Q and Kt = E W_K (head 0) and the scale s.
    Cost: two [n, d] @ [d, dh] products (plus their rounding bounds): O(n·d·dh)."""
    w = {name: point(p) for name, p in model.named_parameters()}
    E, P = w["embed.W_E"], w["pos_embed.W_pos"]
    last = model.cfg.n_ctx - 1
    WQ = w["blocks.0.attn.W_Q"][0]
    # (E + P[last]) W_Q + b_Q as E W_Q plus one row: the big product has point operands
    row = add(matmul_cs(P[last : last + 1], WQ, counter), w["blocks.0.attn.b_Q"][0][None], counter)  # [1, dh]
    qt = add(matmul_cs(E, WQ, counter), row, counter)
    kt = matmul_cs(E, w["blocks.0.attn.W_K"][0], counter)
    return QKPieces(qt, kt, attn_scale_interval(model.cfg))


def abs_up(a: Interval) -> np.ndarray:
    """max(|lo|, |hi|): an upper bound on |x| for x in a (exact, no rounding)."""
    return np.maximum(np.abs(a.lo), np.abs(a.hi))


def row_norms_up(a: Interval, counter: FlopCounter) -> np.ndarray:
    """Upper bounds on the Euclidean norms of the rows of every matrix in a [r, p]: [r].
    Squares rounded up, the sum bounded as a nonnegative matmul, sqrt (correctly rounded) rounded
    up. Cost: O(r·p)."""
    x = abs_up(a)
    counter.add(2 * x.size, "abs")
    sq = up(x * x, counter)
    counter.add(sq.size, "square")
    ss = matmul_abs_up(sq, np.ones((sq.shape[-1], 1)), counter)[:, 0]
    r = up(np.sqrt(ss), counter)
    counter.add(r.size, "sqrt")
    return r


def _outer_up(cols_a: list[np.ndarray], cols_b: list[np.ndarray], counter: FlopCounter) -> np.ndarray:
    """Upper bound on Σ_j a_j[q] b_j[t] for nonnegative vectors: [n_a, n_b]. Cost O(n_a·n_b·j)."""
    A = np.stack(cols_a, axis=1)
    B = np.stack(cols_b, axis=0)
    return matmul_abs_up(A, B, counter)


def _widen(main: Interval, err: np.ndarray, counter: FlopCounter) -> Interval:
    """[main.lo − err, main.hi + err], outward rounded. Cost 4 ops per entry."""
    return sub(main, Interval(-err, err), counter)


def _svd_bases(qt: np.ndarray, kt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float dh×dh matrices L, R with L Rᵀ ≈ I such that (qt L)(kt R)ᵀ is the SVD of qt ktᵀ with
    the singular values split evenly (columns of qt L scaled by √σ_j, of kt R by √σ_j). Any
    failure (rank deficiency, non-finite values) falls back to L = R = I, which is still sound."""
    dh = qt.shape[1]
    eye = np.eye(dh)
    try:
        with np.errstate(all="ignore"):  # a non-finite basis is caught below
            return _svd_bases_unchecked(qt, kt)
    except (np.linalg.LinAlgError, ValueError):
        return eye, eye.copy()


def _svd_bases_unchecked(qt: np.ndarray, kt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dh = qt.shape[1]
    uq, sq, vqt = np.linalg.svd(qt, full_matrices=False)  # qt = uq diag(sq) vqt
    tiny = max(float(sq.max(initial=0.0)), 1e-300) * 1e-10
    sq = np.maximum(sq, tiny)
    # core: diag(sq) vqt ktᵀ = U Σ Vᵀ;  qt ktᵀ = uq U Σ Vᵀ
    core = (sq[:, None] * vqt) @ kt.T  # [p, n]
    U, sig, _ = np.linalg.svd(core, full_matrices=False)
    sig = np.maximum(sig, max(float(sig.max(initial=0.0)), 1e-300) * 1e-10)
    p = U.shape[1]
    # L maps dh -> p directions: qt L = uq U diag(√σ)
    L = (vqt.T / sq[None, :]) @ U * np.sqrt(sig)[None, :]  # [dh, p]
    if p < dh:  # complete to a square invertible matrix with the orthogonal complement
        comp = np.linalg.svd(vqt, full_matrices=True)[2][p:].T  # [dh, dh - p]
        L = np.concatenate([L, comp], axis=1)
    R = np.linalg.inv(L).T
    if not (np.all(np.isfinite(L)) and np.all(np.isfinite(R))):
        raise np.linalg.LinAlgError("non-finite basis")
    return L, R


def eqke_svd(pieces: QKPieces, rank: int, counter: FlopCounter) -> Interval:
    """Enclosure [n, n] of EQKE itself (no row constant), from a rank-``rank`` SVD main term and
    the Cauchy–Schwarz bound on the tail (module docstring).

    Cost: O(n·dh²) for Qt L, Kt R, Qt Δ and the norms (dh³ for the float SVDs, not part of what
    a checker repeats but counted all the same), plus O(n²·(rank + 2)) for the n×n main term and
    error. Never the O(n²·dh) product."""
    qt, kt, s = pieces.qt, pieces.kt, pieces.s
    n, dh = qt.shape
    r = max(0, min(int(rank), dh))
    qm, km = 0.5 * (qt.lo + qt.hi), 0.5 * (kt.lo + kt.hi)
    counter.add(4 * qm.size, "midpoints")
    L, R = _svd_bases(qm, km)
    counter.add(2 * n * dh * dh + 2 * dh**3 * 4, "svd (float, any result is sound)")
    QL = matmul_cs(qt, point(L), counter)  # [n, dh]
    KR = matmul_cs(kt, point(R), counter)  # [n, dh]
    delta = sub(point(np.eye(dh)), matmul_cs(point(L), point(R.T), counter), counter)  # [dh, dh]
    dnorm = row_norms_up(Interval(delta.lo.reshape(1, -1), delta.hi.reshape(1, -1)), counter)  # ||Δ||_F
    qd = up(row_norms_up(qt, counter) * dnorm[0], counter)  # ||Qt[q] Δ|| <= ||Qt[q]||·||Δ||_F
    counter.add(n, "norm combine")
    alpha = row_norms_up(QL[:, r:], counter) if r < dh else np.zeros(n)
    beta = row_norms_up(KR[:, r:], counter) if r < dh else np.zeros(n)
    err = _outer_up([alpha, qd], [beta, row_norms_up(kt, counter)], counter)
    if r > 0:
        main = matmul_cs(QL[:, :r], Interval(KR.lo[:, :r].T, KR.hi[:, :r].T), counter)  # [n, n]
    else:
        main = point(np.zeros((n, n)))
    return mul_scalar(_widen(main, err, counter), s, counter)


def eqke_meandiff(pieces: QKPieces, counter: FlopCounter, *, key_direction: bool = True) -> Interval:
    """Enclosure [n, n] of EQKE[q, t] − c_q (c_q = s·Qt[q]·μ_K, a per-query constant that no
    softmax sees) from the mean query row and the per-row differences (module docstring).

    With ``key_direction``, the differences are also split along one key direction v: the
    direction in which the keys grow with the token, v ∝ Σ_t (t − t̄)·δK_t (a regression on the
    token value, O(n·dh), no iteration), normalised in floating point. With Π = v vᵀ and
    ε = 1 − vᵀv (enclosed; ~1e-16), exactly
        δ_q·δK_t = (1 + ε)(δ_q·v)(δK_t·v) + Q⊥_q·K⊥_t,   Q⊥ = δQ (I − Π),  K⊥ = δK (I − Π),
    so the main term gains the rank-one (δ_q·v)(δK_t·v) and the error becomes ||Q⊥_q||·||K⊥_t||.

    Cost: O(n·dh) for the mean rows, differences, projections and norms, plus O(n²) to write
    the n×n enclosure (a few products per entry)."""
    qt, kt, s = pieces.qt, pieces.kt, pieces.s
    n, dh = qt.shape
    mu_q = (0.5 * (qt.lo + qt.hi)).mean(axis=0)  # any float vector is sound
    mu_k = (0.5 * (kt.lo + kt.hi)).mean(axis=0)
    counter.add(4 * qt.lo.size + 4 * kt.lo.size, "means")
    dq = sub(qt, point(mu_q[None, :]), counter)  # [n, dh]
    dk = sub(kt, point(mu_k[None, :]), counter)  # [n, dh]
    # the scale is applied to the length-n pieces, never to an n×n table
    main_t = mul_scalar(matmul_cs(dk, point(mu_q[:, None]), counter), s, counter)  # [n, 1]: s μ_Q·δK_t
    main = Interval(np.broadcast_to(main_t.lo.T, (n, n)), np.broadcast_to(main_t.hi.T, (n, n)))
    if key_direction:
        tok = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        v = (0.5 * (dk.lo + dk.hi)).T @ tok  # [dh]: any float vector is sound
        counter.add(2 * n * dh + 2 * dk.lo.size, "key direction")
        norm = float(np.sqrt(v @ v))
        counter.add(2 * dh + 1, "key direction")
        v = v / norm if norm > 0 and np.isfinite(norm) else np.eye(dh)[0]
        counter.add(dh, "key direction")
        V = point(v[:, None])
        a = matmul_cs(dq, V, counter)  # [n, 1]: δ_q·v
        b = matmul_cs(dk, V, counter)  # [n, 1]: δK_t·v
        one_plus_eps = sub(point(np.array([[2.0]])), matmul_cs(point(v[None, :]), V, counter), counter)
        dq = sub(dq, matmul_cs(a, point(v[None, :]), counter), counter)  # Q⊥ [n, dh]
        dk = sub(dk, matmul_cs(b, point(v[None, :]), counter), counter)  # K⊥ [n, dh]
        sa = mul_scalar(mul_scalar(a, one_plus_eps[0, 0], counter), s, counter)  # [n, 1]
        main = add(main, matmul_cs(sa, Interval(b.lo.T, b.hi.T), counter), counter)  # [n, n]
    nq = up(row_norms_up(dq, counter) * s.hi, counter)  # s·||Q⊥_q|| (s > 0)
    counter.add(n, "scale")
    err = _outer_up([nq], [row_norms_up(dk, counter)], counter)  # [n, n]
    return _widen(main, err, counter)
