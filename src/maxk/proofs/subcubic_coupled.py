"""``subcubic-coupled``: the subcubic gap argument with its losing terms tightened, the ones
``maxk.proofs.subcubic_losses`` measures the subcubic proofs lose on.

The subcubic check (``maxk.proofs.subcubic``) bounds, for max m, query q and threshold T, every
output o != m at once by giving each term its own worst output (decoupled), a non-max position
the largest weight over t <= T times the largest value over t <= T (NS·NW), and the scores from
a low-rank EQKE with an error term. Measured (docs/proofs.md), the decoupled worst output costs
most (the query's worst output is o = q, a max copy's is m's nearest rival, a non-max token's
is itself, and no single output is all three), then the NS·NW product and the EQKE error term.
This strategy keeps the same sets of inputs (every non-max token <= T, per (q, m)) and the same
counting, and tightens the check:

* **tables** (``maxk.proofs.chain``): EQKE | EQKP, EVOU ; PVOU and EUPU each one float product
  chain of the weights with one a-priori rounding radius, not interval products.
* **EQKE** (option ``attention``, default "band"): the n×n table computed exactly from column
  t0(q) >= q − 1 on in each row q and bounded by a rank-one form with a Cauchy–Schwarz error
  below it, where that bound's upper end is ``EQKE_CUT`` below the row's lowest score at or
  above q (``maxk.proofs.chain.banded_qk``: far tokens' weights are e^−6 of a max token's or
  less there, and nothing certified changes on the models measured); "full" the whole product,
  O(n²·dh) like the EVOU table; "keydir", "svd" the low-rank bounds of ``maxk.proofs.lowrank``.
* **outputs**: the check runs per column, each a set of outputs with its own D, V and P terms:
  a candidate set C of single outputs — with ``exact_outputs`` = r >= 1, r outputs per pair
  chosen by ``maxk.proofs.rivals.greedy_rivals`` (option ``rival_order``, default "greedy": the
  term maxima whose removal lowers the outside columns most, weighted by the attention each
  term carries), or ("evou") the query's largest EVOU output and the r largest of EVOU[m] — and two columns
  for the outputs outside C below m and above m, whose terms are each row's maximum there (the
  first of the row's stored r + 3 largest entries on that side outside C ∪ {m}, else the
  smaller of the last stored value and the row's maximum over the side); PVOU's term on those
  two is its side maximum. r = 0 leaves the two side columns (as ``subcubic-split``).
* **far tokens by blocks**: a non-max token t <= T−b at position i adds
  w_t (v_t + y) <= epi_i (A + w_top·y⁺), with y = Pd[i, o] + Dd[o], w_top the largest weight
  over t <= T−b and A the largest (block max weight · block max value)⁺ over geometric blocks
  of tokens T−b, T−b−1..T−b−2, T−b−3..T−b−6 (range maxima from sparse tables over t), then
  every token below them as one block (``BLOCK_DEPTH`` = 3: the prefix maxima of weight and
  worst-output value); a block's value on a candidate output o is max_t EVOU_hi[t, o] −
  min_t EVOU_lo[t, m] (or the worst output's, if smaller). (The subcubic NS·NW bound, once
  taken as well, was never the smaller on trained models and cost a third of the check.)
* **near tokens** (option ``near_tokens`` = b, default 0): the b tokens T−b+1..T are bounded
  one by one, their own weight times their own value (exact on the candidates).
* **a second pass** (options ``refine_outputs`` = R, ``refine_top``): the pairs of the
  ``refine_top`` largest max tokens (they hold most inputs: P[max = m] grows like m^(k−1)) not
  yet at T = m − 1 are searched on upward with R rivals checked one by one; the other pairs keep
  their thresholds, so rivals are paid for only where the inputs are. Each pair is searched with
  1, 2, 4, ... < R and R rivals and gets the fewest that reach its best threshold; with
  ``refine_pairs`` = P only the P pairs gaining most inputs per (rivals + 3) are kept (a few
  pairs hold most of what r = 0 loses). Choosing is search, uncounted; only the kept pairs are
  set up and verified, counted.
* **a FLOP budget** (option ``flop_budget`` = B, instead of P): the whole proof counts at most B
  FLOPs (unless the r-rival proof alone does not fit: then it alone). The prover finds the
  r-rival thresholds T0, searches each candidate pair with every rival count of the menu,
  measures what each gains (inputs) and costs (FLOPs per pair beyond the r-rival check), puts
  each pair's options on their upper concave hull and takes the hull steps in order of inputs
  per FLOP (a multiple-choice knapsack's greedy: a pair may get fewer rivals than its best
  needs), the longest prefix whose proof, tried on a copy and counted there, fits B. The proof
  then verifies every pair once at its claimed threshold, the refined pairs with their rivals
  only (their r-rival check is not repeated). So a frontier point can sit at a budget
  (``maxk.proofs.frontier``); the choosing is search, uncounted.

Sound: for an input in the set and an output o != m, o lies in one column, and every term of
F(o) is at most that column's entry (each is an upper bound of the exact term for every output
the column stands for); a non-max token adds at most its near, block or prefix bound. The
per-column terms (value differences, weights, block products) are rounded up; the check's own
arithmetic on them (sums, weight times value, the worst arrangement) runs in plain floating
point and must come out below −slack, an a-priori bound on its rounding error relative to the
pair's largest weight (``_check_slack``); anything non-finite fails. The thresholds are the
certificate: the search that finds them is not counted (``maxk.proofs.subcubic.search_pairs``),
every reported T is checked once more and counted.

Cost: the tables (O(n²·d); EQKE O(n²·dh) at most), O(n) per row for the verified top entries
of the rows read, O(n²·log n) for the sparse tables, O(n²·k·b) exponentials for the near
tokens, and O((r + 3)·k·(b + log n)) per pair's check (plus the second pass's pairs with R):
O(n²·d + n²·k·(r + 3)·(b + log n)·log n) — subcubic for fixed r, b.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import cast

import numpy as np

from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from ..registry import Refused
from .chain import HeadTables, head_tables
from .common import require_single_head
from .enclose import ETA, EXP_REL, Interval, U, down, exp, mul_upper, up
from .head_split import split_thresholds
from .lowrank import eqke_meandiff, eqke_svd, qk_pieces
from .rivals import RIVAL_ORDERS, RivalCache
from .subcubic import FINITE, _exp_up, count_certified, largest_certified, margin_up, search_pairs, side_margins_up

__all__ = [
    "COST",
    "EXACT_OUTPUTS",
    "NEAR_TOKENS",
    "REFINE_OUTPUTS",
    "ATTENTION",
    "EQKE_CUT",
    "FLOP_BUDGET",
    "REFINE_PAIRS",
    "REFINE_TOP",
    "RIVAL_ORDERS",
    "coupled_thresholds",
    "prove_coupled",
]

COST = (  # r, b, R, top: the options
    "O(n^2 d + n^2 k (exact_outputs + 3) (near_tokens + log n) log n"
    " + refine_top n k (refine_outputs + 3) (near_tokens + log n) log n)"
)
EXACT_OUTPUTS = 0  # r: the max token's r largest rivals (and the query's own output) kept exactly
REFINE_OUTPUTS = 0  # R: rivals kept exactly in a second pass over the top max tokens (0: none)
REFINE_TOP = 16  # how many max tokens, from the top, the second pass covers
BLOCK_DEPTH = 3  # geometric token blocks of sizes 1, 2, 4, then everything below them as one block
ATTENTION = ("band", "full", "keydir", "svd")  # the EQKE bounds, the default first
EQKE_CUT = 6.0  # "band": far entries bounded once e^-cut below the row's lowest score at or above the query
REFINE_PAIRS = 0  # P: the second pass keeps only the P pairs it gains most inputs on (0: every pair it raises)
_Tabs = tuple[Interval, Interval, Interval, Interval, Interval]  # EQKE, EQKP, EVOU, PVOU, EUPU
NEAR_TOKENS = 0  # b: tokens just below the threshold bounded one by one (little gain once blocks are used)
FLOP_BUDGET = 0  # the second pass spends what is left of this many FLOPs for the whole proof (0: no budget)
BUDGET_ROUNDS = 8  # the prover's trial runs to fit the second pass into its budget


def _row_tops(
    x: Interval, R: int, counter: FlopCounter, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices [r, R] and upper bounds [r, R] of the R largest entries (by hi) of each row of x
    (or only of ``rows``; the others hold index −1 and NaN, which no check passes), largest
    first. The sort is the prover's; the verifier checks the list: sorted, and every entry not
    in it at most its last. Cost: n − 1 comparisons per row."""
    hi = x.hi
    rows = np.arange(hi.shape[0]) if rows is None else rows
    idx = np.full((hi.shape[0], R), -1, dtype=np.int64)
    val = np.full((hi.shape[0], R), np.nan)
    sub = hi[rows]
    order = np.argsort(-sub, axis=1, kind="stable")[:, :R]
    top = np.take_along_axis(sub, order, axis=1)
    rest = sub.copy()
    np.put_along_axis(rest, order, -np.inf, axis=1)
    if not (np.all(top[:, :-1] >= top[:, 1:]) and np.all(rest.max(axis=1, initial=-np.inf) <= top[:, -1])):
        raise AssertionError("a row's top entries failed their verification")
    counter.add(rows.size * (hi.shape[1] - 1), "top entries")
    idx[rows], val[rows] = order, top
    return idx, val


class _RowCache:
    """Arrays [n_rows, ...] whose rows are computed when a caller first asks for them, once each
    (the rows not built keep their fill value, which no check passes: −1 indices, NaN values)."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.built = np.zeros(arrays[0].shape[0], dtype=bool)

    def build(self, rows: np.ndarray, make) -> list[np.ndarray]:
        """The arrays with ``rows`` built: ``make(new)`` gives, per array, the rows ``new`` (the
        asked-for rows not built yet; it counts its own FLOPs). Cost: ``make``'s on the new rows."""
        new = np.unique(rows)
        new = new[~self.built[new]]
        if new.size:
            for arr, part in zip(self.arrays, make(new), strict=True):
                arr[new] = part
            self.built[new] = True
        return self.arrays


def _cached_tops(
    cache: dict, name, x: Interval, R: int, rows: np.ndarray | None, counter: FlopCounter
) -> tuple[np.ndarray, np.ndarray]:
    """``_row_tops(x, R, counter, rows)`` kept in ``cache`` across calls: the rows a call reads
    (``rows``; None: every row) that no earlier call built are built (and counted) now, so a call
    never reads a row another call's pairs left unbuilt. Cost: ``_row_tops``'s on the new rows."""
    n = x.hi.shape[0]
    key = (name, R)
    if key not in cache:
        cache[key] = _RowCache([np.full((n, R), -1, dtype=np.int64), np.full((n, R), np.nan)])
    want = np.arange(n) if rows is None else rows
    idx, val = cache[key].build(want, lambda new: [a[new] for a in _row_tops(x, R, counter, new)])
    return idx, val


def _outside_max(
    idx: np.ndarray,
    val: np.ndarray,
    excl: np.ndarray,
    m: np.ndarray,
    below: bool,
    side_max: np.ndarray,
    counter: FlopCounter,
) -> np.ndarray:
    """For rows given by their stored tops idx, val [p, R], excluded outputs excl [p, c] and the
    max token m [p]: an upper bound [p] on the row's largest entry among the outputs o < m
    (``below``) or o > m outside excl — the first stored entry on that side not excluded, else
    the smaller of the last stored value (every entry not stored is at most it) and side_max
    [p], the row's maximum over the whole side. Cost: two comparisons per stored entry scanned
    (up to the first on that side not excluded) and one mark per excluded output."""
    if idx.shape[1] == 0:  # nothing stored: the side's maximum
        return side_max
    side = idx < m[:, None] if below else idx > m[:, None]
    # excluded outputs marked per row, then each stored entry looked up: O(R + c), not O(R·c)
    marks = np.zeros((idx.shape[0], int(max(idx.max(initial=0), excl.max(initial=0))) + 1), dtype=bool)
    marks[np.arange(idx.shape[0])[:, None], excl] = True
    free = side & ~marks[np.arange(idx.shape[0])[:, None], np.maximum(idx, 0)]  # [p, R]
    first = np.argmax(free, axis=1)
    found = free.any(axis=1)
    # the verifier scans each row's stored entries in order and stops at the first free one: two
    # comparisons (side, mark) per entry read, every entry when none is free
    counter.add(2 * int(np.where(found, first + 1, idx.shape[1]).sum()) + excl.size, "compare")
    rows = np.arange(idx.shape[0])
    return np.where(found, val[rows, first], np.minimum(val[:, -1], side_max))


def _side_maxima(hi: np.ndarray, counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """pre[r, m] = max_{o<m} hi[r, o] and suf[r, m] = max_{o>m} hi[r, o] (−inf if none)."""
    pre = np.full_like(hi, -np.inf)
    pre[:, 1:] = np.maximum.accumulate(hi, axis=1)[:, :-1]
    suf = np.full_like(hi, -np.inf)
    suf[:, :-1] = np.maximum.accumulate(hi[:, ::-1], axis=1)[:, ::-1][:, 1:]
    counter.add(2 * hi.size, "compare")
    return pre, suf


def _sparse_table(x: np.ndarray, counter: FlopCounter, depth: int | None = None) -> list[np.ndarray]:
    """Levels [L][r, c]: level j holds max(x[:, t : t + 2^j]) at column t (t + 2^j <= c), for
    j < ``depth`` (default: every level). Cost O(r·c·depth) comparisons."""
    levels = [x]
    while (1 << len(levels)) <= x.shape[1] and (depth is None or len(levels) < depth):
        prev, h = levels[-1], 1 << (len(levels) - 1)
        nxt = np.maximum(prev[:, :-h], prev[:, h:])
        counter.add(nxt.size, "compare")
        levels.append(nxt)
    return levels


def _range_max(levels: list[np.ndarray], rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(x[rows, lo..hi]) (inclusive, lo <= hi) from a sparse table: rows [s] or [s, c] with
    lo, hi [s]; result shaped as rows."""
    lev = np.floor(np.log2(hi - lo + 1)).astype(np.int64)
    out = np.empty(rows.shape)
    for L in np.unique(lev):
        j = lev == L
        tab = levels[L]
        shape = (-1,) + (1,) * (rows.ndim - 1)
        a, z = lo[j].reshape(shape), (hi[j] - (1 << L) + 1).reshape(shape)
        out[j] = np.maximum(tab[rows[j], a], tab[rows[j], z])
    return out


class _RowTables:
    """Sparse tables (``_sparse_table``) of the rows of x [r, c], built row by row on demand
    (``_RowCache``): ``levels`` as ``_sparse_table`` returns them, NaN in the rows not built."""

    def __init__(self, x: np.ndarray, depth: int | None = None):
        self.x, self.depth = x, depth
        shapes = [lv.shape[1] for lv in _sparse_table(x[:0], FlopCounter(), depth)]
        self.rows = _RowCache([np.full((x.shape[0], w), np.nan) for w in shapes])
        self.levels = self.rows.arrays

    def build(self, rows: np.ndarray, counter: FlopCounter) -> None:
        """Tables for ``rows`` not built yet, counted. Cost O(c·log c) per new row."""
        self.rows.build(rows, lambda new: _sparse_table(self.x[new], counter, self.depth))


class _Blocks:
    """Sparse tables over the key token t for the geometric blocks of far tokens: the weight
    exp(EQKE_hi[q, t] − ref_q) [q, t], the value W[t, m] (worst output) [m, t], and EVOU's
    columns, hi [o, t] and −lo [m, t], for the value on one output o:
    EVOU[t, o] − EVOU[t, m] <= max_{t∈B} EVOU_hi[t, o] − min_{t∈B} EVOU_lo[t, m]. With
    ``depth`` = L, the blocks of sizes 1, 2, .., 2^(L−1), then every token below them as one
    block, bounded by the prefix maxima ``ens`` [q, t] of ew and ``NW`` [t, m] of W (the worst
    output, on every column), computed here when not given."""

    def __init__(
        self,
        ew: np.ndarray,
        W: np.ndarray,
        evou: Interval,
        counter: FlopCounter,
        depth: int | None = None,
        prefix: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.depth = depth
        self.ew = _sparse_table(ew, counter, depth)
        self.w = _sparse_table(np.ascontiguousarray(W.T), counter, depth)
        self.col_hi = _RowTables(np.ascontiguousarray(evou.hi.T), depth)  # [o, t]
        self.neg_lo = _RowTables(np.ascontiguousarray(-evou.lo.T), depth)  # [m, t]
        if prefix is None and depth is not None:
            prefix = (np.maximum.accumulate(ew, axis=1), np.maximum.accumulate(W, axis=0))
            counter.add(ew.size + W.size, "prefix max")
        self.ens, self.nw = prefix if prefix is not None else (None, None)

    def columns(self, outs: np.ndarray, ms: np.ndarray, counter: FlopCounter) -> None:
        """Build (and count) the tables of EVOU's columns for the candidate outputs ``outs`` and
        max tokens ``ms`` not built yet: only checks with candidate outputs read them, and only
        those rows. A proof builds them before its search (so the search never builds, uncounted,
        what the verification then reads)."""
        self.col_hi.build(outs, counter)
        self.neg_lo.build(ms, counter)

    def products(self, q: np.ndarray, m: np.ndarray, top: np.ndarray, cand: np.ndarray, counter: FlopCounter):
        """A [s, C + 1] >= max over tokens t <= top of (exp(EQKE[q, t] − ref_q)·value)⁺, the
        value EVOU[t, o] − EVOU[t, m] on candidate output o = cand[:, c] (column c) or on any
        output (last column), by blocks of tokens top, top−1..top−2, top−3..top−6, ... (sizes 1,
        2, 4, ...; with ``depth`` L, the rest below the L-th as one block), each bounded by its max
        weight times its max value. O(min(L, log n)·(C + 1)) per pair."""
        A = np.zeros((q.size, cand.shape[1] + 1))
        if cand.shape[1]:
            self.columns(cand.ravel(), m, counter)
        col_hi, neg_lo = self.col_hi.levels, self.neg_lo.levels
        j = 0
        while True:
            hi = top - ((1 << j) - 1)
            act = np.nonzero(hi >= 0)[0]
            if act.size == 0:
                return A
            if j == self.depth:  # every token <= hi as one block: prefix maxima, worst output
                assert self.ens is not None and self.nw is not None
                rest = up(self.ens[q[act], hi[act]] * self.nw[hi[act], m[act]], counter)
                A[act] = np.maximum(A[act], np.maximum(rest, 0.0)[:, None])
                counter.add(2 * rest.size + A[act].size, "blocks")
                return A
            lo, hi = np.maximum(top[act] - ((1 << (j + 1)) - 2), 0), hi[act]
            wb = _range_max(self.ew, q[act], lo, hi)  # [a]
            vb = _range_max(self.w, m[act], lo, hi)  # [a]: worst output
            if cand.shape[1]:
                vo = _range_max(col_hi, cand[act], lo, hi) + _range_max(neg_lo, m[act], lo, hi)[:, None]
                vo = up(vo, counter)
                vb = np.concatenate([np.minimum(vo, vb[:, None]), vb[:, None]], axis=1)  # [a, C + 1]
                counter.add(2 * vo.size, "blocks")
            else:
                vb = vb[:, None]
            prod = mul_upper(np.zeros_like(vb), np.broadcast_to(wb[:, None], vb.shape), vb, counter)
            A[act] = np.maximum(A[act], np.maximum(prod, 0.0))
            counter.add(2 * prod.size + wb.size + vb.size, "blocks")  # the range maxima: one max each
            j += 1


def _decide(tot: np.ndarray, valid: np.ndarray, counter: FlopCounter, slack: np.ndarray | float = 0.0) -> np.ndarray:
    """Certified [s]: every valid column's bound [s, U] finite and < −slack (per pair [s], or
    one number; no valid column: there is no output other than m)."""
    worst = np.where(valid, tot, -np.inf).max(axis=1)
    counter.add(tot.size, "compare")
    return cast(np.ndarray, (np.isfinite(worst) & (worst < -slack)) | ~valid.any(axis=1))


def _check_slack(value_bound: float, f: int, b: int, counter: FlopCounter) -> float:
    """An upper bound on the rounding error of the check's plain floating-point arithmetic.

    Every input of the check is a float standing for itself (an upper bound rounded up, or a
    weight); with S = ``value_bound`` (>= max|EVOU| + max|PVOU| + max|EUPU|), every value term
    (one table difference or a sum of them) is at most 2S and every weight-times-value at most
    4S·ω, ω the pair's largest weight (the positional factor included), so each of the check's
    operations adds at most u·4ωS of its own error and passes on its inputs' errors at most
    unchanged (weights <= ω, max/min exact; a weight picked by the computed sign of its factor
    errs by at most ω times that factor's error). Counting the operations from the tables on
    (each value difference 2uS, Pd + Dd 4uS, a max copy's term 10uωS, the query's 10uωS, a far
    token's 14uωS, a near token's 12uωS, the f-term sums, the forced copy of m): at most
    u·ω·S·(4f² + 26f + 50 + 12b);
    returned doubled (u's higher powers inside), per unit of ω. Non-finite S gives an infinite
    slack (nothing certified). Cost O(1)."""
    if not np.isfinite(value_bound):
        return float("inf")
    terms = 4 * f * f + 26 * f + 50 + 12 * b
    counter.add(4, "slack")
    return float(up(up(2.02 * U * terms, counter) * value_bound, counter))


def coupled_thresholds(
    model,
    counter: FlopCounter | None = None,
    *,
    exact_outputs: int = EXACT_OUTPUTS,
    near_tokens: int = NEAR_TOKENS,
    attention: str = ATTENTION[0],
    refine_outputs: int = REFINE_OUTPUTS,
    refine_top: int = REFINE_TOP,
    refine_pairs: int = REFINE_PAIRS,
    flop_budget: float = FLOP_BUDGET,
    rival_order: str = RIVAL_ORDERS[0],
    strategy: str = "subcubic-coupled",
    direct_offset: np.ndarray | None = None,
    max_offset: np.ndarray | None = None,
    tables: HeadTables | None = None,
) -> np.ndarray:
    """T [n_q, n_max]: per (q, m) with q <= m the largest certified threshold (−1: only the
    inputs whose free positions all hold m, −2: none), with ``exact_outputs`` = r (the max's r
    largest rivals and the query's own output checked one by one), ``near_tokens`` = b tokens
    bounded one by one and the EQKE bound ``attention`` ("full", "keydir" or "svd"); then, with
    ``refine_outputs`` = R > r, the pairs of the ``refine_top`` largest max tokens (most inputs)
    not yet at T = m − 1 searched on upward with R rivals checked exactly (with ``flop_budget``
    > 0, only the pairs and rival counts that gain most inputs per check within what is left of
    that many FLOPs, counted on ``counter``, for the whole proof). ``rival_order`` picks the
    rivals ("greedy" or "evou": ``maxk.proofs.rivals``; the prover's choice). ``direct_offset``
    [n_q, n_max] (floats, optional) is added to the direct term EUPU[q, o] − EUPU[q, m] of every
    output o of pair (q, m), so the check certifies margin > offset (``maxk.proofs.head_split``);
    ``max_offset`` [n_max, n_out] (optional, diagonal ignored) adds b[m, o] to it too, exactly
    with a max copy's value EVOU[m, o] − EVOU[m, m] (and a query's equal to the max) and as its
    column's maximum elsewhere. ``tables``: the model's ``head_tables`` when the caller has them
    (with ``eqke_cut=EQKE_CUT`` for the "band" bound), not computed and counted again.
    Cost in the module docstring."""
    c = counter if counter is not None else FlopCounter()
    require_single_head(model, strategy)
    if exact_outputs < 0 or near_tokens < 0:
        raise MaxkError(f"exact_outputs and near_tokens must be >= 0, not {exact_outputs}, {near_tokens}")
    if refine_outputs < 0 or refine_top < 0 or refine_pairs < 0:
        raise MaxkError(
            "refine_outputs, refine_top and refine_pairs must be >= 0, not "
            f"{refine_outputs}, {refine_top}, {refine_pairs}"
        )
    if flop_budget < 0 or (flop_budget and refine_pairs):
        raise MaxkError(f"flop_budget must be >= 0 and not set with refine_pairs, not {flop_budget}, {refine_pairs}")
    if rival_order not in RIVAL_ORDERS:
        raise MaxkError(f"unknown rival order {rival_order!r}: choose one of {', '.join(RIVAL_ORDERS)}")
    if attention not in ATTENTION:
        raise MaxkError(f"unknown EQKE bound {attention!r}: choose one of {', '.join(ATTENTION)}")
    # every table as one float product chain with an a-priori rounding bound (maxk.proofs.chain)
    with np.errstate(all="ignore"):  # an overflow is refused below
        try:
            cut = EQKE_CUT if attention == "band" else None
            tabs = tables if tables is not None else head_tables(model, c, eqke_cut=cut)
        except MaxkError as e:
            raise Refused(FINITE, str(e)) from e
    eqke, eqkp, evou, pvou, eupu = tabs.eqke, tabs.eqkp, tabs.evou, tabs.pvou, tabs.eupu
    if attention in ("keydir", "svd"):  # a low-rank EQKE with an error term instead of the n×n product
        pieces = qk_pieces(model, c)
        eqke = eqke_svd(pieces, 2, c) if attention == "svd" else eqke_meandiff(pieces, c, key_direction=True)
    for name, arr in (("EQKE", eqke.lo), ("EQKE", eqke.hi), ("EQKP", eqkp.lo), ("EQKP", eqkp.hi)):
        if not np.all(np.isfinite(arr)):
            raise Refused(FINITE, f"{name} enclosure is not finite")
    n = eqke.shape[0]
    cache: dict = {"value_bound": tabs.value_bound}  # the check's slack reads it
    offsets = (("offset", direct_offset), ("max_offset", max_offset))
    for key, off in offsets:  # maxk.proofs.head_split
        if off is not None:
            off = np.array(off, dtype=np.float64)
            if off.shape != (n, n):
                raise MaxkError(f"{key} must be [{n}, {n}], not {list(off.shape)}")
            if key == "max_offset":
                np.fill_diagonal(off, 0.0)
            cache[key] = off
    if rival_order == "greedy":
        cache["rivals"] = RivalCache((eqke, eqkp, evou, eupu), n, cache.get("max_offset"))
    given = [cache[key] for key, _ in offsets if key in cache]
    # the offsets add at most two plain-float operations to a value term (Dd + c + bs, col − bs),
    # each erring by u·(2S + Σ|offset|) at most: S -> 4(S + Σ|offset|) in the slack covers them
    if given:
        cache["value_bound"] = 4.0 * (tabs.value_bound + sum(float(np.abs(o).max(initial=0.0)) for o in given))
    with np.errstate(all="ignore"):  # inf/NaN can only make a check fail
        tabs_ = (eqke, eqkp, evou, pvou, eupu)
        if flop_budget and refine_outputs > exact_outputs and refine_top > 0:
            left = float(flop_budget) - c.total  # what the budget leaves after the tables
            return _budgeted(tabs_, exact_outputs, refine_outputs, near_tokens, refine_top, left, c, cache)
        T = _thresholds(*tabs_, exact_outputs, near_tokens, c, cache)
        if refine_outputs > exact_outputs and refine_top > 0:
            qs, ms = np.nonzero(np.triu(np.ones((n, n), dtype=bool)))
            pick = (ms >= n - refine_top) & (T[qs, ms] < ms - 1)
            qs, ms = qs[pick], ms[pick]
            if qs.size:
                _refine(tabs_, T, qs, ms, exact_outputs, refine_outputs, near_tokens, refine_pairs, c, cache)
    return T


def _refine(
    tabs_: _Tabs, T: np.ndarray, qs, ms, r: int, R: int, b: int, P: int, counter: FlopCounter, cache: dict
) -> None:
    """The second pass, in place on T [n, n], over the candidate pairs (qs, ms) [p]. Which pairs
    to refine, and with how many rivals, is the prover's choice: each pair is searched (on a copy
    of the cache, its FLOPs dropped) with every rival count of the menu 1, 2, 4, ... below R and
    R itself; a pair is given the fewest rivals that reach its best threshold and the P pairs
    (0: all) with the most inputs gained per unit of check, (rivals + 3), are kept. The kept
    pairs are then set up, searched and verified, counted, one group per rival count."""
    menu = _menu(r, R)
    n, k = tabs_[1].shape
    before = _pair_inputs(T[qs, ms], qs, ms, n, k)
    found = {x: _thresholds(*tabs_, x, b, FlopCounter(), copy.deepcopy(cache), (qs, ms), T[qs, ms]) for x in menu}
    best = found[R]
    need = np.full(qs.size, R)
    for x in reversed(menu):  # the fewest rivals that reach the best threshold
        need = np.where(found[x] >= best, x, need)
    gain = (_pair_inputs(best, qs, ms, n, k) - before) / (need + 3.0)
    keep = np.nonzero(gain > 0)[0]
    keep = keep[np.argsort(-gain[keep], kind="stable")]
    if P:
        keep = keep[:P]
    plan = np.zeros(qs.size, dtype=np.int64)
    plan[keep] = need[keep]
    _run_plan(tabs_, T, qs, ms, b, plan, counter, cache)


def _menu(r: int, R: int) -> list[int]:
    """The second pass's rival counts: 1, 2, 4, ... between r and R, and R."""
    return sorted({1 << j for j in range(12) if r < 1 << j < R} | {R})


def _run_plan(
    tabs_: _Tabs, T: np.ndarray, qs, ms, b: int, plan: np.ndarray, counter: FlopCounter, cache: dict, claims=None
) -> None:
    """Pairs (qs, ms) [p] searched on upward from T with plan [p] rivals each (0: left alone), in
    place on T, one group per rival count, counted on ``counter``; with ``claims`` (rival count ->
    thresholds [p] the prover found), those thresholds checked instead (T may then be −2,
    nothing certified yet). Cost: the groups' set-up and one verified check per raised pair."""
    for x in np.unique(plan[plan > 0]):
        sel = np.nonzero(plan == x)[0]
        q, m = qs[sel], ms[sel]
        if claims is None:
            T[q, m] = _thresholds(*tabs_, int(x), b, counter, cache, (q, m), T[q, m])
        else:
            T[q, m] = _thresholds(*tabs_, int(x), b, counter, cache, (q, m), T[q, m], claims[int(x)][sel], True)


def _hull_steps(gains: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The increments of a multiple-choice knapsack's greedy: for each pair j (column of gains
    [M, p], option i costing costs[i] > 0, increasing), the upper concave hull of (0, 0) and
    (costs[i], gains[i, j]) from the origin up to the pair's largest gain; every hull step
    (pair, option reached) listed by decreasing gain per cost (ties: pair, then step order), so
    that any prefix of the list takes a prefix of each pair's steps. Returns (pair [K], option
    [K]). Prover's choice, not counted."""
    steps: list[tuple[float, int, int, int]] = []
    for j in range(gains.shape[1]):
        c0, g0, h = 0.0, 0.0, 0
        while True:  # from the hull point (c0, g0): the option of steepest slope beyond it
            slopes = np.where(costs > c0, (gains[:, j] - g0) / np.maximum(costs - c0, 1e-300), -np.inf)
            i = int(np.argmax(slopes))  # the first (cheapest) of equal slopes
            if not slopes[i] > 0:
                break
            steps.append((-float(slopes[i]), j, h, i))
            c0, g0, h = float(costs[i]), float(gains[i, j]), h + 1
    steps.sort()
    return np.array([s[1] for s in steps], dtype=np.int64), np.array([s[3] for s in steps], dtype=np.int64)


def _budgeted(
    tabs_: _Tabs, r: int, R: int, b: int, top: int, budget: float, counter: FlopCounter, cache: dict
) -> np.ndarray:
    """T [n, n] for every pair q <= m by the r-rival check and a second pass with up to R rivals
    on the pairs of the ``top`` largest max tokens, together counting at most ``budget`` FLOPs on
    ``counter`` (beyond what it holds already; if the r-rival proof alone does not fit, it alone).

    The prover (uncounted, on copies of ``cache``) finds the r-rival thresholds T0, searches each
    pair of the top not at m − 1 from there with every rival count x of the menu (``_menu``),
    measuring the inputs each gains and the FLOPs per pair each costs beyond the r-rival check,
    and takes the steps of ``_hull_steps`` in order (inputs gained per FLOP): the longest prefix
    found whose proof, tried and counted on a copy, fits the budget (first guessed from the
    measured costs, then corrected by the measured rate, BUDGET_ROUNDS tries, each aiming 1% lower). The proof then
    verifies, counted, every pair once at its claimed threshold: the pairs of the prefix with
    their rivals, the others with r at T0 (a refined pair's r-rival check is not repeated).
    Cost: the r-rival proof's, less its check on the refined pairs, plus their checks with x."""
    n, k = tabs_[1].shape
    qa, ma = np.nonzero(np.triu(np.ones((n, n), dtype=bool)))
    after = copy.deepcopy(cache)  # the search's copy, holding what the r-rival proof computes once
    T0 = _thresholds(*tabs_, r, b, FlopCounter(), after)[qa, ma]
    cand = np.nonzero((ma >= n - top) & (T0 < ma - 1))[0]
    menu = _menu(r, R)
    q, m = qa[cand], ma[cand]
    if "rivals" in cache:  # every rival order the menu reads, found once and shared by the copies
        cache["rivals"].get(q, m, R)
        after["rivals"] = copy.deepcopy(cache["rivals"])
    before = _pair_inputs(T0[cand], q, m, n, k)
    gains, per = np.zeros((len(menu), cand.size)), np.zeros(len(menu))
    claims = {}  # rival count -> the thresholds found [every pair] (T0 outside the candidates)
    for i, x in enumerate(menu):  # each rival count on every candidate: inputs gained, FLOPs per pair
        c = FlopCounter()
        claims[x] = T0.copy()
        claims[x][cand] = _thresholds(*tabs_, x, b, c, copy.deepcopy(after), (q, m), T0[cand])
        gains[i] = _pair_inputs(claims[x][cand], q, m, n, k) - before
        per[i] = c.total / max(cand.size, 1)
    c = FlopCounter()  # the r-rival check a refined pair no longer needs, per pair
    _thresholds(*tabs_, r, b, c, copy.deepcopy(after), (q, m), np.full(cand.size, -2), T0[cand], True)
    costs = np.maximum.accumulate(np.maximum(per - c.total / max(cand.size, 1), 1.0))  # FLOPs a pair's option adds
    pair, opt = _hull_steps(gains, costs)
    cum = np.zeros(pair.size)
    prev = np.zeros(cand.size)
    for s, (j, i) in enumerate(zip(pair, opt, strict=True)):  # each step's FLOPs: its option's less the last one's
        cum[s], prev[j] = costs[i] - prev[j], costs[i]
    cum = np.cumsum(cum)

    def plan_of(L: int) -> np.ndarray:  # rivals [pairs]: a pair's later steps have more rivals
        plan = np.zeros(qa.size, dtype=np.int64)
        np.maximum.at(plan, cand[pair[:L]], np.array(menu, dtype=np.int64)[opt[:L]])
        return plan

    def run(L: int, c: FlopCounter, cc: dict) -> np.ndarray:
        plan = plan_of(L)
        T = np.full((n, n), -2, dtype=np.int64)
        rest = np.nonzero(plan == 0)[0]
        if rest.size:  # the r-rival thresholds T0 verified (nothing certified before)
            q, m = qa[rest], ma[rest]
            T[q, m] = _thresholds(*tabs_, r, b, c, cc, (q, m), np.full(rest.size, -2), T0[rest], True)
        _run_plan(tabs_, T, qa, ma, b, plan, c, cc, claims)
        return T

    def cost_of(L: int) -> int:
        c = FlopCounter()
        run(L, c, copy.deepcopy(cache))
        return c.total

    good = _fit_prefix(cost_of, cum, budget) if pair.size else 0
    start = counter.total
    T = run(good, counter, cache)
    if good and counter.total - start > budget:
        raise AssertionError("the budgeted proof spent more than its budget")
    return T


def _fit_prefix(cost_of: Callable[[int], int], cum: np.ndarray, budget: float, rounds: int = BUDGET_ROUNDS) -> int:
    """The longest prefix length L found (0..len(cum)) whose trial proof ``cost_of(L)`` counts at
    most ``budget`` FLOPs, ``cum`` [K] the estimated cumulative FLOPs of the steps. The cost is
    modelled as base + setup + rate·cum[L − 1]: first setup 0 and rate 1, then rate and setup
    from the last two trials with refined steps (one such trial: setup 0), each guess aiming 1%
    lower than the last so that a fit is found from above; at most ``rounds`` + 1 trials (the
    prover's search, uncounted)."""
    base = cost_of(0)  # the r-rival proof alone
    good, bad = 0, len(cum) + 1  # the longest prefix known to fit; the shortest known not to
    rate, setup = 1.0, 0.0
    seen: list[tuple[float, int]] = []  # (cum[L − 1], FLOPs beyond the base) of the trials with L >= 1
    for i in range(rounds if len(cum) and base < budget else 0):
        aim = (budget - base - setup) * (1.0 - 0.01 * i) / rate
        L = min(max(int(np.searchsorted(cum, aim, side="right")), good + 1), bad - 1)
        spent = cost_of(L)
        good, bad = (max(good, L), bad) if spent <= budget else (good, min(bad, L))
        if good + 1 >= bad:
            break
        seen.append((float(cum[L - 1]), spent - base))
        (x0, y0), (x1, y1) = seen[-2:] if len(seen) > 1 else ((0.0, 0), seen[-1])
        slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
        if len(seen) > 1 and slope > 0:  # the secant through the last two trials
            rate, setup = slope, max(y1 - slope * x1, 0.0)
        else:  # measured FLOPs per estimated FLOP of the steps
            rate, setup = max(y1, 1) / x1, 0.0
    return good


def _pair_inputs(T: np.ndarray, q: np.ndarray, m: np.ndarray, n: int, k: int) -> np.ndarray:
    """[p] the number of uniform inputs with query q, max m and every non-max token <= T (0 for
    T < −1), from the distribution kernel (``count_below``), as floats. Used only to choose which
    pairs to refine (any choice is sound). O(1) per pair."""
    d = resolve("uniform", n, k)
    counts = [d.count_below(k, int(b), int(a), int(t)) if t >= -1 else 0 for a, b, t in zip(q, m, T, strict=True)]
    return np.array(counts, dtype=np.float64)


def _thresholds(
    eqke,
    eqkp,
    evou,
    pvou,
    eupu,
    r: int,
    b: int,
    counter: FlopCounter,
    cache: dict,
    pairs=None,
    start=None,
    guess=None,
    claimed: bool = False,
) -> np.ndarray:
    """T [n, n] for every pair q <= m, or with ``pairs`` = (qs, ms) and ``start`` [p] (thresholds
    already certified for them) T [p] >= start for those pairs only. ``cache`` holds the n×n
    quantities that do not depend on r, computed (and counted) once across calls."""
    n, k = eqkp.shape
    f = k - 1

    def once(key, make):
        if key not in cache:
            cache[key] = make()
        return cache[key]

    W = once("W", lambda: margin_up(evou, counter))  # [t, m] >= max_{o≠m} EVOU[t, o] − EVOU[t, m]
    Pv = once("Pv", lambda: side_margins_up(pvou, counter)[0])  # [2, i, m]: max over o < m, o > m
    qs, ms = np.nonzero(np.triu(np.ones((n, n), dtype=bool))) if pairs is None else pairs
    R = min(r + 3, n)  # stored tops per row: enough for r + 1 candidates, m and one more
    empty = np.zeros((n, 0), dtype=np.int64)
    # the rows' top entries, for the rows these pairs read only (every row when all pairs are)
    ev_rows, eu_rows = (None, None) if pairs is None else (np.unique(np.concatenate([qs, ms])), np.unique(qs))
    ev_i, ev_v = _cached_tops(cache, "evtops", evou, R, ev_rows, counter) if r else (empty, empty.astype(float))
    eu_i, eu_v = _cached_tops(cache, "eutops", eupu, R, eu_rows, counter) if r else (empty, empty.astype(float))
    # candidate outputs per pair [p, C]: the prover's greedy choice (maxk.proofs.rivals), or the
    # query's largest EVOU output and the r largest of EVOU[m] (duplicates change nothing; one
    # equal to m is skipped)
    if r and "rivals" in cache:
        cand = cache["rivals"].get(qs, ms, r)
    else:
        cand = np.concatenate([ev_i[qs, : min(r, 1)], ev_i[ms, :r]], axis=1)
    excl = np.concatenate([cand, ms[:, None]], axis=1)
    # columns: the candidates, then the outputs outside them below m and above m
    valid = np.concatenate([cand != ms[:, None], (ms > 0)[:, None], (ms < n - 1)[:, None]], axis=1)  # [p, U]

    def minus(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        out = up(hi - lo, counter)
        counter.add(out.size, "value diffs")
        return out

    def column(tab: Interval, rows: np.ndarray, tops, sides) -> np.ndarray:
        """[p, U]: tab.hi[rows, o] − tab.lo[rows, m] on the candidates, then the row's maxima
        outside them below m and above m (tops: the rows' stored largest entries; sides: the
        rows' maxima over o < m and o > m)."""
        on = np.take_along_axis(tab.hi[rows], cand, axis=1)
        out = [
            _outside_max(tops[0][rows], tops[1][rows], excl, ms, below, side[rows, ms], counter)[:, None]
            for below, side in zip((True, False), sides, strict=True)
        ]
        diff = np.concatenate([on, *out], axis=1) - tab.lo[rows, ms][:, None]  # plain float (the slack)
        counter.add(diff.size, "value diffs")
        return diff

    ev_sides = once("ev_sides", lambda: _side_maxima(evou.hi, counter))
    eu_sides = once("eu_sides", lambda: _side_maxima(eupu.hi, counter))
    Dd = column(eupu, qs, (eu_i, eu_v), eu_sides)  # direct path
    if "offset" in cache:  # a per-pair offset of the direct term (plain float: the slack covers it)
        Dd = Dd + cache["offset"][qs, ms][:, None]
        counter.add(Dd.size, "value diffs")
    Vq = column(evou, qs, (ev_i, ev_v), ev_sides)  # the query's value
    Vm = column(evou, ms, (ev_i, ev_v), ev_sides)  # a max copy's value

    def shifted(key: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The offset cache[key] [row, o] (maxk.proofs.head_split) added exactly to the value term
        of the token ``rows`` stands for: that term's column [p, U] for EVOU + offset, minus the
        offset's column maxima bs [p, U], which every term gets (Dd + bs)."""
        off = cache[key]
        pre, suf = once((key, "sides"), lambda: _side_maxima(off, counter))
        bs = np.concatenate([np.take_along_axis(off[rows], cand, axis=1), pre[rows, ms, None], suf[rows, ms, None]], 1)
        # hi: EVOU + offset rounded up; lo: EVOU's (only lo[row, m] is read)
        ev = once((key, "evou"), lambda: Interval(evou.lo, up(evou.hi + off, counter)))
        tops = _cached_tops(cache, (key, "tops"), ev, R, ev_rows, counter) if r else (empty, empty)
        counter.add(3 * bs.size, "value diffs")
        return column(ev, rows, tops, once((key, "ev sides"), lambda: _side_maxima(ev.hi, counter))) - bs, bs

    if "max_offset" in cache:  # b[m, o]: exact on a max copy and on a query equal to the max
        Vm, bs = shifted("max_offset", ms)
        Dd = Dd + bs
        Vq = np.where((qs == ms)[:, None], Vm, Vq)
    # PVOU: exact on the candidates, its side maximum on the outside columns
    pc = minus(pvou.hi[:, cand].transpose(1, 0, 2), pvou.lo[:, ms].T[:, :, None])  # [p, k, C]
    Pd = np.concatenate([pc, Pv[0][:, ms].T[:, :, None], Pv[1][:, ms].T[:, :, None]], axis=2)  # [p, k, U]

    def reference() -> np.ndarray:  # [n] one reference per query row
        counter.add(eqke.hi.size + eqkp.hi.size + n, "compare")
        return up(eqke.hi.max(axis=1) + eqkp.hi.max(axis=1), counter)

    ref_q = once("ref_q", reference)

    def prefix() -> tuple[np.ndarray, np.ndarray, np.ndarray, _Blocks, np.ndarray]:
        counter.add(eqke.hi.size, "scores")
        ew = _exp_up(up(eqke.hi - ref_q[:, None], counter), counter)  # [q, t] >= exp(EQKE − ref_q)
        # weight prefix maxima: ens[q, T] >= exp(max_{t<=T} EQKE[q, t] − ref_q) (exp is monotone)
        ens = np.maximum.accumulate(ew, axis=1)
        NW = np.maximum.accumulate(W, axis=0)  # [T, m]
        counter.add(ens.size + NW.size, "prefix max")
        blocks = _Blocks(ew, W, evou, counter, BLOCK_DEPTH, (ens, NW))
        return NW, ens, _exp_up(eqkp.hi[:, :f], counter), blocks, ew

    NW, ens, epi, blocks, ew = once("prefix", prefix)  # ens [q, T], epi [q, i]
    if cand.shape[1]:  # the EVOU column tables the blocks read, built before the search
        blocks.columns(cand.ravel(), ms, counter)
    ep = once("ep", lambda: exp(eqkp, counter))  # [q, i] exp(EQKP), enclosed once

    def weights(q: np.ndarray, t: np.ndarray, i: np.ndarray | int) -> Interval:
        """exp(EQKE[q, t] − ref_q) · exp(EQKP[q, i]), enclosed (broadcast shapes; the key factor
        at the shape of q and t — its upper end from the table ew, its lower end here — and the
        positional one looked up)."""
        e = np.exp(down(eqke.lo[q, t] - ref_q[q], counter))
        ek_lo = np.maximum(down(e * (1.0 - EXP_REL) - 16 * ETA, counter), 0.0)
        lo, hi = np.broadcast_arrays(ek_lo * ep.lo[q, i], ew[q, t] * ep.hi[q, i])
        counter.add(4 * e.size + 2 * lo.size, "weights")
        return Interval(np.maximum(down(lo, counter), 0.0), up(hi, counter))

    free = np.arange(f)
    # the value terms above and the check's arithmetic below run in plain floating point, decided
    # against a slack (``_check_slack``) relative to the pair's largest weight: the query's, or
    # ens[q, m]·max_i exp(EQKP[q, i]), which bounds a max copy's and every non-max token's
    # (ens is nondecreasing in T <= m − 1)
    unit = once(("slack", b), lambda: _check_slack(cache["value_bound"], f, b, counter))
    wq_q = once("wq", lambda: weights(np.arange(n), np.arange(n), f))  # [n]: the query's weight, per q
    wq = Interval(wq_q.lo[qs], wq_q.hi[qs])  # [p]
    xq = Dd + Vq + Pd[:, f]
    qterm = np.where(xq >= 0, wq.hi[:, None], wq.lo[:, None]) * xq  # [p, U]
    counter.add(4 * xq.size, "setup")
    is_q_max = qs == ms
    if f == 0:
        slack0 = up(wq.hi * (1.02 * unit), counter)

        def ok0(T: np.ndarray, sel: np.ndarray) -> np.ndarray:
            return _decide(qterm[sel], valid[sel], counter, slack0[sel])

        return _search(ok0, qs, ms, n, counter, start, guess, claimed)
    wm = weights(qs[:, None], ms[:, None], free[None])  # [p, f]
    ypd = Pd[:, :f] + Dd[:, None]  # [p, f, U]: Pd[i, o] + Dd[o]
    xm = ypd + Vm[:, None]
    neg = np.where(xm >= 0, wm.hi[..., None], wm.lo[..., None]) * xm  # a max copy at position i
    counter.add(4 * xm.size, "setup")
    if b:  # the near tokens' weights for every (q, t, i), enclosed once
        wt = weights(np.arange(n)[:, None, None], np.arange(n)[None, :, None], free[None, None, :])  # [q, t, i]

    top_pos = once("top_pos", lambda: epi.max(axis=1))  # [q] max_i exp(EQKP[q, i]) (i < k − 1)
    wmax = np.maximum(wq.hi, ens[qs, ms] * top_pos[qs])
    slack = up(wmax * (1.02 * unit), counter)  # [p]
    counter.add(3 * wmax.size + epi.size, "slack")

    def ok(T: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """Certified at threshold T [s] for the pairs sel [s]. The check's arithmetic (after its
        inputs, each an upper bound rounded up) runs in plain floating point and is decided
        against ``slack``, an a-priori bound on its rounding error (``_check_slack``)."""
        q, m = qs[sel], ms[sel]
        yp = ypd[sel]  # [s, f, U]
        far = T - b  # tokens <= far by the prefix maxima of weight and value
        fc = np.maximum(far, 0)
        top = ens[q, fc]  # [s]: the largest weight over t <= far (without exp(EQKP))
        # tokens <= far by geometric blocks: w_t (v_t + y) <= epi_i (A + w_top y⁺) with
        # A = max over blocks of (block max weight · block max value)⁺, w_top = ens[q, far]
        # (the prefix bound (max w)·(max v + y)⁺ of ``subcubic`` was never smaller on trained
        # models, measured, and cost a third of the check)
        A = blocks.products(q, m, fc, cand[sel], counter)  # [s, C + 1]: any output in the last column
        A = np.concatenate([A, A[:, -1:]], axis=1)  # [s, U]
        pb = epi[q][..., None] * (A[:, None, :] + top[:, None, None] * np.maximum(yp, 0.0))
        pos = np.where((far >= 0)[:, None, None], pb, -np.inf)
        counter.add(6 * yp.size, "check")
        for j in range(b):  # one near token t = T − j
            t = np.maximum(T - j, 0)
            # its value: exact on the candidates, its worst output over all o != m elsewhere
            vc = minus(np.take_along_axis(evou.hi[t], cand[sel], axis=1), evou.lo[t, m][:, None])
            vt = np.concatenate([vc, W[t, m][:, None], W[t, m][:, None]], axis=1)  # [s, U]
            x = vt[:, None, :] + yp  # [s, f, U]
            wj = wt[q, t]  # [s, f]
            pn = np.where(x >= 0, wj.hi[..., None], wj.lo[..., None]) * x
            pos = np.maximum(pos, np.where((T - j >= 0)[:, None, None], pn, -np.inf))
            counter.add(5 * x.size, "check")
        ng = neg[sel]
        best = np.maximum(ng, pos)  # [s, f, U]
        acc = qterm[sel] + best.sum(axis=1)  # [s, U]: query + Σ_i max(neg_i, pos_i)
        need = (acc[:, None] - best + ng).max(axis=1)  # a free copy of m, at the worst position
        tot = np.where(is_q_max[sel][:, None], acc, need)
        counter.add(4 * best.size + 2 * acc.size, "check")
        return _decide(tot, valid[sel], counter, slack[sel])

    return _search(ok, qs, ms, n, counter, start, guess, claimed)


def _search(
    ok, qs: np.ndarray, ms: np.ndarray, n: int, counter: FlopCounter, start, guess=None, claimed: bool = False
) -> np.ndarray:
    """``search_pairs`` over every pair, or for a subset with thresholds ``start`` [p] already
    certified (−2: none): the largest T >= start that ``ok`` passes, searched from ``guess`` [p]
    (default start + 1; the search not counted, as in ``search_pairs``), or with ``claimed`` the
    thresholds ``guess`` themselves (the prover's, found before), and the pairs above start
    checked once more, counted."""
    if start is None:
        return search_pairs(ok, qs, ms, n, counter)
    idx = np.arange(qs.size)
    first = np.minimum(start + 1 if guess is None else guess, ms - 1)
    if claimed:
        found = first
    else:
        with counter.uncounted():
            found = largest_certified(ok, idx, ms, first) if idx.size else start
    up_ = np.nonzero(found > start)[0]
    if up_.size and not np.all(ok(found[up_], up_)):
        raise AssertionError("a threshold found by the search failed its verification")
    return np.maximum(start, found)


def prove_coupled(
    model,
    dist: Distribution,
    *,
    counter: FlopCounter,
    exact_outputs: int = EXACT_OUTPUTS,
    near_tokens: int = NEAR_TOKENS,
    attention: str = ATTENTION[0],
    refine_outputs: int = REFINE_OUTPUTS,
    refine_top: int = REFINE_TOP,
    refine_pairs: int = REFINE_PAIRS,
    flop_budget: float = FLOP_BUDGET,
    rival_order: str = RIVAL_ORDERS[0],
) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    d = resolve(dist, model.cfg.n, model.cfg.k)
    T = split_thresholds(
        model,
        lambda m, off, b: coupled_thresholds(
            m,
            counter,
            exact_outputs=exact_outputs,
            near_tokens=near_tokens,
            attention=attention,
            refine_outputs=refine_outputs,
            refine_top=refine_top,
            refine_pairs=refine_pairs,
            flop_budget=flop_budget,
            rival_order=rival_order,
            direct_offset=off,
            max_offset=b,
        ),
        counter,
    )
    return count_certified(T, model.cfg.k, d)
