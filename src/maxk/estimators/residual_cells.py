"""The top-two cell explanation: a cheap per-input control variate for ``wick-residual``.

What decides an input's fate first is its max m and where it sits, then the runner-up t2 and
where it sits (``systematic``'s hierarchy). A **cell** is that much of an input: (m, the set of
positions holding m, t2, the set holding t2); the kernel's order-statistic laws give every cell's
probability exactly (``top_law`` and ``copies_law`` of the max, then of the largest value below
it; positions uniform among the free ones — the tokens are exchangeable).

The explanation's value of a cell, F(cell), is the model's probability on m with m and t2 at their
positions and every other position holding the **mean field** of the tokens below t2: the mean
attention weight exp(EQKE[q, t]) over t < t2 and the weight-averaged value Σ_t w_t EVOU[t]/Σ_t w_t,
at that position's exp(EQKP[q, i]) and PVOU[i]. The query q is m or t2 when its position holds
one of them; otherwise it is itself a low token, and its rows (EQKE[q], EQKP[q], EUPU[q]) are
averaged over q < t2. Only the outputs m, t2 and ``competitors`` outputs per m (those the logits
favour when m takes all the attention) are read. What it presumes: the low tokens and a low query
act through their average; the other outputs carry no probability.

Per input, W(x) = F(cell(x)) for the ``max_cells`` most probable cells, and for an input whose
cell is not kept the weighted mean G[m] of the kept cells with its max (the mean over all kept
cells where none has it). Its mean is exact,

    E[W] = Σ_kept P(cell)·F(cell) + Σ_m (P[max = m] − Σ_kept with max m P(cell))·G[m],

so ``wick-residual``'s estimate E[βW] + mean of (f − βW) is unbiased for any model and any β
fixed before the sampled inputs. Cost: O(h·n³) for the prefix sums of the mean field plus
O(cells·h·(competitors + 2)) for the cells, independent of the weights (``budget.explanation_flops``
measures it once on the all-zero tables); per input, O(k + log cells) comparisons and one gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution
from ..errors import MaxkError
from ..flops import FlopCounter

COMPETITORS = 2  # competitor outputs read per max, beside m and t2
ALL_COPIES_UP_TO_K = 5  # beyond this k, cells hold one copy of m and of t2 (the rest: fallback)


def default_copies(k: int) -> int:
    """The most copies of m and of t2 a cell holds by default: all up to k = 5 (at most 4^5 masks),
    else 1 (under ``uniform`` at n = 64, k = 10 two copies already make 4·10^6 cells)."""
    return k if k <= ALL_COPIES_UP_TO_K else 1


@dataclass(frozen=True, eq=False)
class CellExplanation:
    """The cell explanation of one model under one distribution.

    keys: sorted cell keys [C] (``cell_keys``); prob, value: each kept cell's exact probability and
    F [C]; fallback: G[m] [n], the value of an input whose cell is not kept; estimate: E[W] (exact);
    covered: the kept cells' total probability; flops: what building it counted."""

    n: int
    k: int
    keys: np.ndarray
    prob: np.ndarray
    value: np.ndarray
    fallback: np.ndarray
    estimate: float
    covered: float
    flops: int
    slopes: Slopes | None = None

    @property
    def n_outputs(self) -> int:
        """Outputs each cell reads (0 without first-order terms)."""
        return 0 if self.slopes is None else int(self.slopes.outs.shape[1])

    @property
    def n_heads(self) -> int:
        """Heads the first-order terms run over (0 without them)."""
        return 0 if self.slopes is None else int(self.slopes.gamma.shape[0])

    def values(self, tokens: np.ndarray, counter: FlopCounter | None = None) -> np.ndarray:
        """W(x) for inputs tokens [b, k] -> [b]: the value of each input's cell plus, with slopes,
        the first-order terms of its low tokens (each of mean zero given the cell), or G[m] when
        the cell is not kept. Cost per input: ``cell_lookup_flops``."""
        x = np.asarray(tokens, dtype=np.int64)
        key, m = cell_keys(x, self.n)
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        hit = self.keys[pos] == key
        if counter is not None:
            counter.add(len(x) * cell_lookup_flops(self.k, len(self.keys), self.n_outputs, self.n_heads), "cell_values")
        w = np.where(hit, self.value[pos], self.fallback[m])
        if self.slopes is not None and hit.any():
            w[hit] += _first_order(self.slopes, x[hit], m[hit], pos[hit])
        return w


def cell_lookup_flops(k: int, cells: int, outputs: int = 0, heads: int = 0) -> int:
    """FLOPs ``CellExplanation.values`` counts per input: the max, the runner-up and their position
    masks (8k comparisons and adds), the key (6), the binary search over ``cells`` keys and the
    fallback's select (3); with first-order terms over ``outputs`` outputs, per head and position
    6 per output and 10 more."""
    return 8 * k + 6 + max(int(cells), 1).bit_length() + 3 + heads * k * (6 * outputs + 10)


def cell_input_flops(
    tables: CircuitTables, dist: Distribution, max_cells: int | None, competitors: int, first_order: bool = False
) -> int:
    """FLOPs one input's W costs with these settings (``cell_lookup_flops`` at the number of cells kept)."""
    n_cells = len(enumerate_cells(dist, tables.n, tables.k, default_copies(tables.k)).prob)
    kept = n_cells if max_cells is None else min(int(max_cells), n_cells)
    if not first_order:
        return cell_lookup_flops(tables.k, kept)
    return cell_lookup_flops(tables.k, kept, min(competitors, tables.n - 1) + 2, tables.n_heads)


def _first_order(sl: Slopes, x: np.ndarray, m: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Σ over the low positions i of input x (neither m nor t2) of the first-order term
    g_i(x_i) = π_i·[Σ_o γ_o (u(x_i) EVOU[x_i, o] − S_o/t2) − Γ (u(x_i) − ū)] + (u(x_i) − ū)·Σ_o γ_o π_i PVOU[i, o],
    u the cell's row of scaled weights: the linear term of F in the low token's weight and value.
    Given the cell each low token is uniform below t2 (both laws), so E[g_i] = 0 exactly. -> [b]."""
    b, k = x.shape
    t2 = np.where(x == m[:, None], -1, x).max(axis=1)
    low = (x != m[:, None]) & (x != t2[:, None])  # [b, k]
    r = sl.row[cell]
    outs = sl.outs[cell]  # [b, O]
    total = np.zeros(b)
    for h in range(sl.gamma.shape[0]):
        g, G, ub, sb = sl.gamma[h, cell], sl.Gamma[h, cell], sl.ubar[h, cell], sl.sbar[h, cell]
        u = sl.ex[h][r[:, None], x]  # [b, k]
        ev = sl.evou[h][x[:, :, None], outs[:, None, :]]  # [b, k, O]
        pvi = sl.pv[h][r[:, None, None], np.arange(k)[None, :, None], outs[:, None, :]]  # [b, k, O]
        du = u - ub[:, None]
        inner = (g[:, None, :] * (u[:, :, None] * ev - sb[:, None, :])).sum(axis=2) - G[:, None] * du
        term = sl.pi[h][r] * inner + du * (g[:, None, :] * pvi).sum(axis=2)
        total += np.where(low, term, 0.0).sum(axis=1)
    return total


def cell_keys(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell key [b], max [b]) of inputs x [b, k]: key = ((m·2^k + M)·(n + 1) + t2 + 1)·2^k + T with
    M, T the bitmasks of the positions holding m and t2 (t2 = −1, T = 0 when every token is m)."""
    b, k = x.shape
    bits = (1 << np.arange(k, dtype=np.int64))[None, :]
    m = x.max(axis=1)
    at_m = x == m[:, None]
    below = np.where(at_m, -1, x)
    t2 = below.max(axis=1)
    at_t = (x == t2[:, None]) & ~at_m
    M = (at_m * bits).sum(axis=1)
    T = (at_t * bits).sum(axis=1)
    return _key(m, M, t2, T, n, k), m


def _key(m, M, t2, T, n: int, k: int) -> np.ndarray:
    return ((m * (1 << k) + M) * (n + 1) + t2 + 1) * (1 << k) + T


# ---------------------------------------------------------------- the cells and their laws


@dataclass(frozen=True)
class Cells:
    """Every cell of nonzero probability with at most ``max_copies`` copies of m and of t2: max
    m, bitmask M, runner-up t (−1: none), bitmask T, probability [C] each."""

    m: np.ndarray
    M: np.ndarray
    t: np.ndarray
    T: np.ndarray
    prob: np.ndarray


def _rows(law: np.ndarray) -> np.ndarray:
    s = law.sum(axis=1, keepdims=True)
    return np.where(s > 0, law / np.where(s > 0, s, 1.0), 0.0)


def _masks(free: int, c: int, k: int) -> list[int]:
    """Bitmasks of the c-subsets of the set bits of ``free`` (a k-bit mask)."""
    pos = [i for i in range(k) if free >> i & 1]
    return [sum(1 << i for i in s) for s in combinations(pos, c)]


def enumerate_cells(dist: Distribution, n: int, k: int, max_copies: int | None = None) -> Cells:
    """The cells of ``dist`` at (n, k) with their exact probabilities (the kernel's ``top_law`` and
    ``copies_law``, positions uniform among the free ones). ``max_copies`` (default: all) drops the
    cells with more copies of m or of t2; their mass goes to the fallback. Cost O(n²·2^k) table
    entries, no FLOPs counted (the laws are the distribution's, as the systematic design's are)."""
    cap = k if max_copies is None else int(max_copies)
    ms = np.arange(n, dtype=np.int64)
    p_max = _rows(dist.top_law(np.array([k]), np.array([n]), n))[0]  # [n]
    cop = dist.copies_law(np.full(n, k), ms, k)
    p_c = np.ones((n, 1)) if cop is None else _rows(cop)  # [n, c-1]
    out: dict[str, list[np.ndarray]] = {f: [] for f in ("m", "M", "t", "T", "prob")}
    full = (1 << k) - 1
    for c in range(1, min(cap, p_c.shape[1]) + 1):
        pm = p_max * p_c[:, c - 1] / comb(k, c)  # [n] per mask of c positions
        r = k - c
        if r == 0:
            live = np.nonzero(pm > 0)[0]
            for M in _masks(full, c, k):
                _append(out, live, np.full(len(live), M), -np.ones(len(live), np.int64), 0, pm[live])
            continue
        p_t = _rows(dist.top_law(np.full(n, r), ms, n))  # [m, t2]
        cop2 = dist.copies_law(np.full(n, r), ms, k)
        p_c2 = np.ones((n, 1)) if cop2 is None else _rows(cop2)  # [t2, c2-1]
        mm, tt = np.nonzero((pm[:, None] * p_t) > 0)
        for c2 in range(1, min(cap, r, p_c2.shape[1]) + 1):
            p = pm[mm] * p_t[mm, tt] * p_c2[tt, c2 - 1] / comb(r, c2)
            ok = p > 0
            if not ok.any():
                continue
            for M in _masks(full, c, k):
                for T in _masks(full & ~M, c2, k):
                    _append(out, mm[ok], np.full(int(ok.sum()), M), tt[ok], T, p[ok])
    cells = {
        f: np.concatenate(v) if v else np.zeros(0, dtype=np.float64 if f == "prob" else np.int64)
        for f, v in out.items()
    }
    return Cells(cells["m"], cells["M"], cells["t"], cells["T"], cells["prob"])


def _append(out, m, M, t, T, p) -> None:
    out["m"].append(np.asarray(m, np.int64))
    out["M"].append(np.asarray(M, np.int64))
    out["t"].append(np.asarray(t, np.int64))
    out["T"].append(np.broadcast_to(np.asarray(T, np.int64), np.shape(m)).copy())
    out["prob"].append(np.asarray(p, np.float64))


# ---------------------------------------------------------------- the explanation


def _check(tables: CircuitTables, dist: Distribution, max_cells, competitors) -> None:
    if not dist.exchangeable:
        raise MaxkError("the cell explanation needs exchangeable tokens (positions uniform among the free ones)")
    if max_cells is not None and (
        isinstance(max_cells, bool) or not isinstance(max_cells, (int, np.integer)) or max_cells < 1
    ):
        raise MaxkError(f"cells must be a positive integer (the most probable cells kept), got {max_cells!r}")
    if isinstance(competitors, bool) or not isinstance(competitors, (int, np.integer)) or competitors < 0:
        raise MaxkError(f"competitors must be an integer >= 0, got {competitors!r}")


def explain_cells(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    max_cells: int | None = None,
    competitors: int = COMPETITORS,
    max_copies: int | None = None,
    first_order: bool = False,
) -> CellExplanation:
    """The cell explanation (module docstring): the ``max_cells`` most probable cells (default all)
    of at most ``max_copies`` copies each (default ``default_copies``), their values F read over m,
    t2 and ``competitors`` outputs per max, the fallback G and the exact mean E[W].
    Cost: O(h·n³ + cells·h·(competitors + 2)), counted; it does not depend on the weights."""
    _check(tables, dist, max_cells, competitors)
    f0 = counter.total
    n, k = tables.n, tables.k
    cells = enumerate_cells(dist, n, k, default_copies(k) if max_copies is None else max_copies)
    order = np.argsort(-cells.prob, kind="stable")
    if max_cells is not None:
        order = order[: int(max_cells)]
    m, M, t, T, prob = (getattr(cells, f)[order] for f in ("m", "M", "t", "T", "prob"))
    value, slopes = _cell_values(tables, m, M, t, T, competitors, counter, first_order)
    p_max = _rows(dist.top_law(np.array([k]), np.array([n]), n))[0]
    kept_m = np.bincount(m, weights=prob, minlength=n)
    kept_f = np.bincount(m, weights=prob * value, minlength=n)
    overall = float(kept_f.sum() / kept_m.sum()) if kept_m.sum() > 0 else 0.0
    fallback = np.where(kept_m > 0, kept_f / np.where(kept_m > 0, kept_m, 1.0), overall)
    rest = np.maximum(p_max - kept_m, 0.0)
    estimate = float(kept_f.sum() + rest @ fallback)
    counter.add(6 * len(m) + 4 * n, "cell_mean")
    keys = _key(m, M, t, T, n, k)
    srt = np.argsort(keys, kind="stable")
    return CellExplanation(
        n,
        k,
        keys[srt],
        prob[srt],
        value[srt],
        fallback,
        estimate,
        float(prob.sum()),
        counter.total - f0,
        None if slopes is None else slopes.take(srt),
    )


@dataclass(frozen=True)
class Slopes:
    """What the first-order terms of the low tokens need, per kept cell (sorted as ``keys``) and head:
    the row (query) r [C], the outputs read [C, O], γ_o = ∂F/∂N_o [H, C, O], Γ = Σ_o γ_o N_o/D
    [H, C], the mean-field weight ū [H, C] and weighted values S_o/t2 [H, C, O]; per head the
    scaled weights ex [H, 2n, n], position factors pi [H, 2n, k] and pi·PVOU pv [H, 2n, k, n]."""

    row: np.ndarray
    outs: np.ndarray
    gamma: np.ndarray
    Gamma: np.ndarray
    ubar: np.ndarray
    sbar: np.ndarray
    ex: np.ndarray
    pi: np.ndarray
    pv: np.ndarray
    evou: np.ndarray

    def take(self, idx: np.ndarray) -> Slopes:
        """The slopes of cells ``idx`` (the per-head tables shared)."""
        return Slopes(
            self.row[idx],
            self.outs[idx],
            self.gamma[:, idx],
            self.Gamma[:, idx],
            self.ubar[:, idx],
            self.sbar[:, idx],
            self.ex,
            self.pi,
            self.pv,
            self.evou,
        )


def _cell_values(
    tables: CircuitTables, m, M, t, T, competitors: int, counter: FlopCounter, with_slopes: bool = True
) -> tuple[np.ndarray, Slopes | None]:
    """F [C] for cells (m, M, t, T) [C]: logits of m, t2 and the competitors through the mean
    field, softmax over them, probability of m. Counted: the prefix sums (per head O(n³)) and
    per cell and head ≈ 12 FLOPs per output read plus 12 for the weights, and the slopes of the
    first-order terms (6 per output and head)."""
    n, k, H = tables.n, tables.k, tables.n_heads
    C = len(m)
    qbit = 1 << (k - 1)
    has_t = t >= 0
    tt = np.maximum(t, 0)
    # the row (query) of each cell: m, t2, or the average over queries below t2 (row n + t2 - 1)
    row = np.where(M & qbit, m, np.where(T & qbit, tt, n + np.maximum(tt, 1) - 1))
    counts = np.arange(1, n + 1, dtype=np.float64)[:, None]
    U = np.concatenate([tables.eupu, np.cumsum(tables.eupu, axis=0) / counts])  # [2n, n]
    counter.add(2 * n * n, "cell_rows")
    comp = _competitors(tables, min(competitors, n - 1), counter)  # [n, K]: at most every other output
    outs = np.concatenate([m[:, None], tt[:, None], comp[m]], axis=1)  # [C, O]
    live_o = np.ones(outs.shape, dtype=bool)
    live_o[:, 1] = has_t
    live_o[:, 2:] &= (outs[:, 2:] != tt[:, None]) | ~has_t[:, None]  # a competitor that is t2 is read once
    posM, okM = _positions(M, k)  # [C, cm] positions holding m (padded), validity
    posT, okT = _positions(T, k)
    counter.add(2 * C * k, "cell_index")
    rows_c = row[:, None]
    logits = U[rows_c, outs]  # [C, O]
    lowcnt = np.maximum(tt, 1).astype(np.float64)
    keep: dict[str, list[np.ndarray]] = {f: [] for f in ("D", "Lp", "ubar", "sbar", "ex", "pi", "pv")}
    for h in range(H):
        E = np.concatenate([tables.eqke[h], np.cumsum(tables.eqke[h], axis=0) / counts])  # [2n, n]
        P = np.concatenate([tables.eqkp[h], np.cumsum(tables.eqkp[h], axis=0) / counts])  # [2n, k]
        ex = np.exp(E - E.max(axis=1, keepdims=True))  # per-row scales cancel in the ratio
        pi = np.exp(P - P.max(axis=1, keepdims=True))
        pv = pi[:, :, None] * tables.pvou[h][None, :, :]  # [2n, k, o]
        counter.add(2 * n * (6 * n + 6 * k + 2 * k * n), "cell_rows")
        # mean field of the tokens below A: prefix sums of weights and weighted values
        pre_w = np.concatenate([np.zeros((2 * n, 1)), np.cumsum(ex, axis=1)], axis=1)  # [2n, n+1]
        wv = ex[:, :, None] * tables.evou[h][None, :, :]  # [2n, t, o]
        pre_v = np.concatenate([np.zeros((2 * n, 1, n)), np.cumsum(wv, axis=1)], axis=1)  # [2n, n+1, n]
        pi_all, pv_all = pi.sum(axis=1), pv.sum(axis=1)  # [2n], [2n, o]
        counter.add(2 * n * (n + 2 * n * n + k + k * n), "cell_prefix")
        e_m = ex[row, m]
        e_t = np.where(has_t, ex[row, tt], 0.0)
        a_M = np.where(okM, pi[rows_c, posM], 0.0).sum(axis=1)
        a_T = np.where(okT, pi[rows_c, posT], 0.0).sum(axis=1)
        a_L = pi_all[row] - a_M - a_T
        u_bar = pre_w[row, tt] / lowcnt
        D = e_m * a_M + e_t * a_T + u_bar * a_L
        counter.add(C * (2 * posM.shape[1] + 2 * posT.shape[1] + 10), "cell_values")
        b_M = np.where(okM[:, None, :], pv[rows_c[:, :, None], posM[:, None, :], outs[:, :, None]], 0.0).sum(axis=2)
        b_T = np.where(okT[:, None, :], pv[rows_c[:, :, None], posT[:, None, :], outs[:, :, None]], 0.0).sum(axis=2)
        b_L = pv_all[rows_c, outs] - b_M - b_T
        ev = tables.evou[h]
        num = (
            e_m[:, None] * (a_M[:, None] * ev[m[:, None], outs] + b_M)
            + e_t[:, None] * (a_T[:, None] * ev[tt[:, None], outs] + b_T)
            + pre_v[rows_c, tt[:, None], outs] * (a_L / lowcnt)[:, None]
            + u_bar[:, None] * b_L
        )
        logits = logits + num / D[:, None]
        counter.add(C * outs.shape[1] * (2 * posM.shape[1] + 2 * posT.shape[1] + 14), "cell_values")
        sbar = pre_v[rows_c, tt[:, None], outs] / lowcnt[:, None]
        for f, v in (
            ("D", D),
            ("Lp", num / D[:, None]),
            ("ubar", u_bar),
            ("sbar", sbar),
            ("ex", ex),
            ("pi", pi),
            ("pv", pv),
        ):
            keep[f].append(v)
    logits = np.where(live_o, logits, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - top)
    prob = e / e.sum(axis=1, keepdims=True)  # softmax over the outputs read
    counter.add(C * outs.shape[1] * 5, "cell_softmax")
    F = prob[:, 0]
    if not with_slopes:
        return F, None
    delta = np.zeros(outs.shape)
    delta[:, 0] = 1.0
    D_h = np.stack(keep["D"])  # [H, C]
    gamma = (F[:, None] * (delta - prob))[None] / D_h[:, :, None]  # ∂F/∂N_o per head [H, C, O]
    Gamma = (gamma * np.stack(keep["Lp"])).sum(axis=2)
    counter.add(H * C * outs.shape[1] * 6, "cell_slopes")
    slopes = Slopes(
        row,
        outs,
        gamma,
        Gamma,
        np.stack(keep["ubar"]),
        np.stack(keep["sbar"]),
        np.stack(keep["ex"]),
        np.stack(keep["pi"]),
        np.stack(keep["pv"]),
        tables.evou,
    )
    return F, slopes


def _positions(mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The set bits of masks [C] as padded positions [C, c] (c = the most set in one mask, >= 1)
    and their validity [C, c]."""
    bits = ((mask[:, None] >> np.arange(k)) & 1).astype(bool)
    c = max(int(bits.sum(axis=1).max(initial=0)), 1)
    pos = np.argsort(~bits, axis=1, kind="stable")[:, :c]
    return pos, np.take_along_axis(bits, pos, axis=1)


def _competitors(tables: CircuitTables, K: int, counter: FlopCounter) -> np.ndarray:
    """[n, K] per max m the K outputs other than m with the largest logit when m takes all the
    attention at the mean position, the query averaged over q <= m."""
    n = tables.n
    counts = np.arange(1, n + 1, dtype=np.float64)[:, None]
    z = np.cumsum(tables.eupu, axis=0) / counts  # row m: mean over q <= m
    z = z + (tables.evou + tables.pvou.mean(axis=1, keepdims=True)).sum(axis=0)
    z[np.arange(n), np.arange(n)] = -np.inf
    counter.add(n * n * (3 + tables.n_heads * 2 + max(K, 1)), "cell_competitors")
    if K == 0:
        return np.zeros((n, 0), dtype=np.int64)
    return np.argsort(-z, axis=1, kind="stable")[:, :K]
