"""The cubic proof (DESIGN §5), O(n³k²) in the common case, sound in floating point.

Inputs are grouped by max token m, query token q <= m and the number c of free positions
(0..k-2) holding a non-max token; the other free positions hold m. With the notation of
``maxk.proofs.common`` (unnormalised weights w_i = exp(score_i - shift), value terms u), an
input is correct iff for every o != m

    F(o) = T_q(o) + sum_{i in M} T_m(i, o) + sum_{j in J} T(t_j, j, o) > 0,

where J (|J| = c) are the free positions of the non-max tokens t_j, M the other free positions,
T_q the query's term, T_m(i, o) = w(m, i) u(m, i, o), T(t, j, o) = w(t, j) u(t, j, o).

Convexity: F(o) = (1/c) sum_{j in J} [B_J(o) + c·T(t_j, j, o)] with B_J the query and max terms,
so the input is correct if every bracket is positive. A bracket depends on one non-max token,
one position j and the arrangement J, so we certify a token t for (m, q, c) when

    min_{o != m} [ G(c, j, o) + c·T(t, j, o) ] > 0 for every free position j,
    G(c, j, o) = T_q(o) + (sum of the k-1-c smallest T_m(i, o) over free i != j)

(G is the worst arrangement of the max copies for that j and o). Then every input of the group
whose non-max tokens all lie in the certified set S(m, q, c) is correct, and there are
C(k-1, c)·|S|^c of them (uniform); under ``distinct`` the count is (k-1)·P(|S \\ {q}|, k-2) for
q < m and P(|S|, k-1) for q = m. Groups with c = 0 are checked directly.

Mixtures. The per-token certificate drops a whole mixture when one of its tokens fails with c
copies. A second certificate handles mixtures: with G0(c, o) = T_q(o) + the k-1-c smallest
T_m(i, o) over all free i (the worst arrangement for any J), if G0(c, o) > 0 for all o != m,

    F(o) >= G0(c, o) - sum_j (-T(t_j, j, o))^+ >= G0(c, o) · (1 - sum_j rho(t_j)),
    rho(t) >= max_{j, o != m} (-T(t, j, o))^+ / G0(c, o),

so an input is correct if the rho of its non-max tokens sum to less than 1. rho is rounded up
to a multiple of 1/K (K = MIX_BUCKETS) and the tuples with bucket sum < K are counted exactly by
a truncated polynomial power (uniform) or a subset DP (distinct). Per group (m, q, c) the
certificate covering more inputs is used, so both counts stay exact and sound.

Where G is formed. Since G(c, j, o) >= G0(c, o) (the k-1-c smallest over every free i are at
most those over i != j), G0 may stand for G at any output. By default (``per_position="shared"``)
G is formed only on the r shared rivals of each query (the outputs where G0 is smallest, which
the partial check treats exactly) and G0 stands for it elsewhere; on trained models that
certifies what G on every output does (the same counts on the shipped model, both
distributions; ~3·10⁻¹⁹ of the inputs fewer at k = 20) for O(k²·r) per (m, q) instead of
O(k²·n). ``per_position="all"`` forms G on every output (the proof before).

Cost. G on every output costs O(n³k²) (n² pairs (m, q), n outputs, k² (c, j); one sort per (m,
q, o)); on the shared rivals O(n²k²r), and G0 O(n³k log k). A bracket G + c·T > 0 is tested as T
> up(-G/c), one comparison. Token checks are first done with the output decoupled, min_o T
against up(-min_o G/c) (and likewise rho from min_o G0), which costs O(n³k²) for all (m, q, c,
t, j) (by default min_{o, j} T against up(-min_o G0/c) first, O(n³k), and per j only where that
fails and T's least value is above the least threshold over j, which decides the rest at once);
the (m, q, c, t) these cheap checks leave open are redone over a few outputs exactly and per
tier of outputs (the token terms of (q, t) once for every c; the terms' tier minima read off
their dyadic levels), and the tiers that still fail are bounded again on their dyadic blocks,
halving only the blocks that fail (``_DyadicTiers``), at most O(n·k) each; a recheck that cannot
change the count is skipped. The number of these exact rechecks grows faster than n³ on trained
models, so by default their FLOPs are held within RECHECK_SHARE (beta) times the rest of the
proof's (``RecheckPool``): the proof costs at most (1 + beta) times its O(n³k²) core, and the
pool is spent on the rechecks with the most estimated certified inputs per FLOP first
(``recheck_share=-1``: every recheck, unbounded). Counting is exact (Python integers where int64
could overflow) and costs O(n²k²) plus O(K² log k) per group whose count is not immediate and
whose (cc, bucket histogram) the proof has not met before (``memo``: one dict per shard, looked
up in O(K); at (20, 128) 7,994 of 54,656 such groups are new); a group whose buckets have not
changed since it was last counted keeps its count.
Shards. The max tokens are dealt round-robin into ``shards`` (default 2), each with its own
recheck pool, memo and FLOP counter, so that they can run in parallel (from n³k² = 2³⁰ on: in
child processes, ``maxk.proofs.shard_processes``, or on worker threads where a child could not
rebuild the distribution) and the count and FLOPs still do not depend on how they ran.
Every step is a lower bound computed with outward rounding (``maxk.proofs.enclose``; the hot
steps round their temporaries in place) from the enclosed tables, so a too-close call is simply
not certified.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from math import ceil, log2
from typing import cast

import numpy as np
import torch

from ..distributions import Distribution, get_distribution, resolve
from ..distributions._laws import bucket_histograms
from ..errors import MaxkError
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from . import shard_processes
from .common import diff_lower, exclude_column
from .enclose import Interval, IntervalTables, down, enclosed_tables, exp, mul_lower, sum_lower, up

COST = "O(n^3 k^2)"
_REFINE_CHUNK = 4096  # (m, q, c, t) cases redone at a time
_RECHECK_FLOATS = 1 << 22  # block terms [cases·blocks, k-1] an exact recheck holds at once (32 MB)
_TOP_BLOCK = 3  # a failed tier is redone from its aligned blocks of at most 2^3 outputs
_BLOCK_FLOATS = 1 << 22  # entries of the worst-arrangement table G built at once (32 MB)
EXACT_OUTPUTS = 4  # r: a token case left open is redone exactly over 2r outputs
EXACT_BUDGET = -1.0  # exact rechecks per max token, in units of (m+1)·m·(k-1)/n cases per stage;
# negative: no limit on their number (the FLOP share RECHECK_SHARE still applies)
RECHECK_SHARE = 0.16  # beta: the exact rechecks' FLOPs are at most beta times the rest of the proof's
# (cumulative over the max tokens, up to one chunk); negative: no limit (every open case that can change the count)
_TOKEN_SHARE = 0.1  # of the recheck FLOPs available when a token stage starts, the share it may spend
PER_POSITION = "shared"  # where G, the worst arrangement per free position, is formed: "shared" rivals or "all"
# outputs (elsewhere G0, the worst over every position, stands for it)
MIX_BUCKETS = 32  # K: resolution of the mixture certificate's rho (sum of buckets < K)
SHARDS = 2  # the max tokens m = s, s + S, s + 2S, ... form shard s of S; each has its own recheck pool and
# count memo, so the result does not depend on how many threads run the shards
_THREADED_WORK = 1 << 30  # n³k² from which the shards run in parallel (below it threads cost more than
# they gain: measured ×0.6–1.1 at n³k² <= 8.4e8, ×1.38 at (k, n) = (20, 256); the GIL serialises the small steps)
_PROCESSES = True  # run them in child processes (``maxk.proofs.shard_processes``), else on threads


def _tables(model_or_tab, counter: FlopCounter) -> IntervalTables:
    return model_or_tab if isinstance(model_or_tab, IntervalTables) else enclosed_tables(model_or_tab, counter)


def _worst_arrangements(Qt: np.ndarray, Mt: np.ndarray, k: int, c: FlopCounter) -> np.ndarray:
    """G[q, c-1, j, o] for c = 1..k-1 and free position j: Qt[q, o] plus the sum of the k-1-c
    smallest Mt[q, i, o] over free i != j, summed in increasing order and rounded down after each
    addition. Qt: [nq, n], Mt: [nq, k-1, n].

    One sort per (q, o): the smallest over i != j are the sorted terms without j's, so with p the
    rank of j the sum of r of them is the prefix sum of r sorted terms if r <= p, else the prefix
    sum of p continued with the terms of rank p+1..r: (k-1)²/2 rounded additions per (q, o), the
    same floats as sorting each j's terms on its own. Cost O(nq·n·k·(k + log k))."""
    nq, f, n = Mt.shape
    order = np.argsort(Mt, axis=1, kind="stable")
    Ms = np.take_along_axis(Mt, order, axis=1)  # [nq, f, n] ascending over i
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(f)[None, :, None], order.shape), axis=1)
    c.add(nq * n * f * max(1, ceil(log2(max(f, 2)))), "sort")
    H = np.empty((nq, f, f, n))  # H[q, p, r, o]: r smallest without rank p (r <= f-1)
    acc = Qt
    for p_ in range(f):
        H[:, p_, p_] = acc  # r = p: the prefix of p terms, which skips none of rank >= p
        if p_ > 0:
            H[:, p_, :p_] = H[:, p_ - 1, :p_]  # r < p: the same prefixes
        run = acc
        for r in range(p_ + 1, f):
            run = down(run + Ms[:, r], c, inplace=True)
            c.add(run.size, "lower sum")
            H[:, p_, r] = run
        if p_ + 1 < f:
            acc = down(acc + Ms[:, p_], c, inplace=True)  # the prefix of p+1 terms
            c.add(acc.size, "lower sum")
    X = np.take_along_axis(H, np.broadcast_to(rank[:, :, None, :], (nq, f, f, n)), axis=1)  # [q, j, r, o]
    return np.ascontiguousarray(X[:, :, ::-1].transpose(0, 2, 1, 3))  # r = f - c: [q, c-1, j, o]


def cubic_certified(
    model_or_tab,
    dist: str | Distribution = "uniform",
    counter: FlopCounter | None = None,
    *,
    exact_outputs: int = EXACT_OUTPUTS,
    exact_budget: float = EXACT_BUDGET,
    recheck_share: float = RECHECK_SHARE,
    per_position: str = PER_POSITION,
    shards: int = SHARDS,
) -> int:
    """Number of inputs of ``dist`` that the cubic proof certifies correct (an exact integer).

    ``model_or_tab``: a model (its tables are enclosed first, counted) or ``IntervalTables``.
    Any number of heads (``multi_head_sets``). ``exact_outputs`` (r), ``exact_budget``,
    ``per_position``: see ``certified_sets`` (a negative budget: no limit); ``recheck_share``
    (beta): the exact rechecks' FLOPs are kept within beta times the rest of the proof's
    (``RecheckPool``, one per shard; negative: no limit, every open case that can change the
    count is rechecked). ``shards`` (S >= 1): the max tokens are dealt round-robin into S
    shards, each proved on its own (its recheck pool, its count memo, its FLOP counter, added
    to ``counter`` at the end) and, from n³k² = 2³⁰ on, run on up to ``torch.get_num_threads()``
    worker threads; the count and FLOPs depend on S, not on the threads. S = 1 is one pool for
    the whole proof.
    Cost: O(n³k²·(r + log k)), the rechecks at most beta of it (with a negative beta and budget,
    their number is not bounded)."""
    if shards < 1:
        raise MaxkError(f"shards must be at least 1, not {shards}")
    c = counter if counter is not None else FlopCounter()
    tab = _tables(model_or_tab, c)
    d = resolve(dist, tab.n, tab.k)
    options = {
        "exact_outputs": exact_outputs,
        "exact_budget": exact_budget,
        "recheck_share": recheck_share,
        "per_position": per_position,
    }
    workers = min(shards, tab.n, torch.get_num_threads()) if tab.n**3 * tab.k**2 >= _THREADED_WORK else 1
    if workers > 1 and _PROCESSES and shard_processes.can_run(d):
        results = shard_processes.run(tab, d, shards, options, workers)
    elif workers > 1:
        with single_threaded(), ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(lambda s: prove_shard(tab, d, s, shards, **options), range(shards)))
    else:
        results = [prove_shard(tab, d, s, shards, **options) for s in range(shards)]
    for _, cs in results:
        c.merge(cs)
    return sum(total for total, _ in results)


def prove_shard(
    tab: IntervalTables,
    d: Distribution,
    s: int,
    shards: int,
    *,
    exact_outputs: int,
    exact_budget: float,
    recheck_share: float,
    per_position: str,
) -> tuple[int, FlopCounter]:
    """Shard s of ``shards`` of the cubic proof: the certified count over the max tokens m = s,
    s + shards, ... with their own recheck pool, count memo and FLOP counter (returned; the
    tables are not in it). Options as ``cubic_certified``."""
    cs = FlopCounter()
    pool = None if recheck_share < 0 else RecheckPool(recheck_share)
    if pool is not None:
        pool.attach(cs)
    sets = certified_sets if tab.n_heads == 1 else multi_head_sets
    options = {
        "exact_outputs": exact_outputs,
        "exact_budget": None if exact_budget < 0 else exact_budget,
        "pool": pool,
        "per_position": per_position,
        "memo": {},  # the mixture counts met so far (``Distribution.count_bucketed``), one per shard
    }
    return sum(sets(tab, m, d, cs, **options).count(cs) for m in range(s, tab.n, shards)), cs


@dataclass
class MaxCertificate:
    """What the cubic proof certifies for max token m (k-1 = f free positions, nq = m+1 queries).

    cert0[q]  [nq] bool: the input with query q and every free position m is correct.
    ok[q, cc-1, t]  [nq, f, m] bool: t is in S(m, q, cc); inputs whose cc non-max free tokens all
        lie in S are correct (the per-token certificate).
    bucket[q, cc-1, t]  [nq, f, m] int: ceil(K·rho) (K = no use) with rho(t) an upper bound on
        max_{j, o} (-T(t, j, o))^+ / G0(cc, o); inputs whose cc non-max tokens have bucket sum
        < K are correct (the mixture certificate).
    Per group (q, cc) the certificate that covers more inputs is used (``use_mix``).
    memo: the mixture counts already met (``Distribution.count_bucketed``), or None.
    mix_known [nq, f], mix_changed [nq, f] bool: the mixture counts of the groups, valid where
    their buckets have not changed since (then only the changed groups are counted again)."""

    m: int
    k: int
    dist: Distribution
    cert0: np.ndarray
    ok: np.ndarray | None = None
    bucket: np.ndarray | None = None
    K: int = MIX_BUCKETS
    memo: dict | None = None
    mix_known: np.ndarray | None = None
    mix_changed: np.ndarray | None = None
    use_mix: np.ndarray | None = field(default=None, init=False)
    _group_counts: dict | None = field(default=None, init=False)

    def count(self, c: FlopCounter | None = None) -> int:
        """Number of certified inputs with max m (exact integer); the distribution counts."""
        c = c if c is not None else FlopCounter()
        d, m, k = self.dist, self.m, self.k
        total = sum(int(self.cert0[q]) for q in range(m + 1) if d.max_only_occurs(k, m, q))
        if self.ok is None:
            return total
        assert self.bucket is not None  # certified_sets sets ok and bucket together
        nq, f_ = self.ok.shape[:2]
        self.use_mix = np.zeros((nq, f_), dtype=bool)
        if self.mix_known is None or self.mix_changed is None:
            mix = d.count_bucketed(self.bucket, self.K, m, k, c, self.memo)
        else:
            mix = _recount(d, self.bucket, self.mix_changed, self.mix_known, m, k, c, self.memo)
        tokens = d.count_token_groups(self.ok, np.arange(nq), m, k)
        ways = d.group_ways(k, m)
        occurs = ways > 0
        w = ways[occurs].astype(object)  # Python integers: the products are exact
        old = w * np.asarray(tokens)[occurs].astype(object)
        new = w * np.asarray(mix)[occurs].astype(object)
        self.use_mix[occurs] = (new > old).astype(bool)
        return total + int(np.maximum(old, new).sum())

    def covers(self, tokens) -> bool:
        """Whether this certificate covers the input ``tokens`` (k ints with max m). For tests;
        call ``count`` first (it picks the certificate per group)."""
        x = [int(t) for t in tokens]
        q, m = x[-1], self.m
        nonmax = [t for t in x[:-1] if t != m]
        if not nonmax:
            return bool(self.cert0[q])
        cc = len(nonmax)
        # non-max tokens exist only where ok and bucket are set; use_mix is set by count()
        assert self.use_mix is not None and self.bucket is not None and self.ok is not None
        if self.use_mix[q, cc - 1]:
            return sum(int(self.bucket[q, cc - 1, t]) for t in nonmax) < self.K
        return all(bool(self.ok[q, cc - 1, t]) for t in nonmax)


@dataclass
class RecheckPool:
    """The FLOP allowance of the exact rechecks of one proof (beta = ``share``): at every point the
    rechecks have spent at most beta times the FLOPs of every other step counted since the pool
    was opened (``core``; the n³k² part of the proof), up to the one chunk that crosses the line
    (``largest``: the dearest chunk run), so the proof costs at most (1 + beta)·core plus a
    chunk: O(n³k²) by construction. Unspent allowance carries over to the next max token (the
    rechecks concentrate on the top ones). How many cases a chunk takes is decided from
    uncounted cost estimates (the prover's choice; any choice is sound); every recheck that runs
    is counted. The FLOPs are read off the counter ``certified_sets`` is given (``attach``)."""

    share: float
    core: int = 0
    spent: int = 0
    largest: int = 0
    counter: FlopCounter | None = field(default=None, init=False)
    _mark: int = field(default=0, init=False)
    _recheck: bool = field(default=False, init=False)
    _rates: dict = field(default_factory=dict, init=False)  # stage -> [FLOPs spent, estimated cost]

    def attach(self, counter: FlopCounter) -> None:
        """Read the FLOPs off ``counter`` from now on (those counted before are not booked)."""
        if counter is not self.counter:
            if self.counter is not None:
                self.settle(self._recheck)
            self.counter, self._mark = counter, counter.total

    def settle(self, recheck: bool) -> None:
        """Book the FLOPs counted since the last call to the rechecks or to the core; those counted
        from now on go to the rechecks if ``recheck``."""
        assert self.counter is not None, "RecheckPool.attach first"
        delta = self.counter.total - self._mark
        if self._recheck:
            self.spent += delta
        else:
            self.core += delta
        self._mark, self._recheck = self.counter.total, recheck

    def available(self) -> float:
        """The recheck FLOPs still allowed: beta·core - spent (negative after an overrun)."""
        self.settle(self._recheck)
        return self.share * self.core - self.spent

    def take(self, stage: str, est: np.ndarray, limit: int, allowed: float) -> int:
        """How many of the next cases (uncounted cost estimates ``est``, in priority order) to
        recheck now: as many as fit ``allowed`` FLOPs at the stage's measured FLOPs per unit of
        estimate, at least one if anything is allowed, at most ``limit``."""
        if allowed <= 0 or len(est) == 0:
            return 0
        spent, estimated = self._rates.get(stage, (0.0, 0.0))
        rate = spent / estimated if estimated > 0 else 1.0
        fits = int(np.searchsorted(np.cumsum(est[:limit]) * rate, allowed, side="right"))
        return max(1, fits)

    def record(self, stage: str, flops: int, estimated: float) -> None:
        """A chunk of ``stage`` cost ``flops`` counted FLOPs for ``estimated`` units of estimate."""
        rate = self._rates.setdefault(stage, [0.0, 0.0])
        rate[0] += flops
        rate[1] += estimated
        self.largest = max(self.largest, flops)


def _mixture_gains(bucket: np.ndarray, floor: np.ndarray, eligible: np.ndarray, ways: np.ndarray) -> np.ndarray:
    """Estimated inputs [nq, f, m] each eligible mixture recheck adds if it lowers its bucket to
    the floor, the other tokens' buckets as they are: cc·ways·(the (cc-1)-tuples of the others
    whose bucket sum fits below K - floor and not below K - bucket), from the truncated powers
    of the group's bucket histogram (repeats allowed: an estimate under any distribution).
    Uncounted floats: a priority, not a check. Cost O(nq·k²·K²) float operations."""
    K = MIX_BUCKETS
    nq, f, m = bucket.shape
    gain = np.zeros(bucket.shape)
    qi, ci = np.nonzero(eligible.any(axis=-1))
    if len(qi) == 0:
        return gain
    b = bucket[qi, ci]  # [G, m]
    hist = bucket_histograms(b, K)[:, :K].astype(np.float64)  # bucket K: in no counted tuple
    # the groups by cc, largest first: the r-th power is formed only for the groups that need it
    order = np.argsort(-ci, kind="stable")
    hist, need = hist[order], ci[order]
    power = np.zeros((len(qi), K))
    power[:, 0] = 1.0  # the 0-tuples: one, of sum 0
    row = np.zeros((len(qi), K))  # row[g, x]: the (cc-1)-tuples of group g with bucket sum <= x
    for r in range(int(need[0]) + 1):
        if r > 0:
            live = int(np.count_nonzero(need >= r))
            nxt = np.zeros((live, K))
            for x in range(K):  # nxt[:, x + y] += power[:, x]·hist[:, y], truncated below K
                nxt[:, x:] += power[:live, x : x + 1] * hist[:live, : K - x]
            power = nxt
        here = need[: len(power)] == r
        row[order[: len(power)][here]] = np.cumsum(power[here], axis=-1)
    padded = np.concatenate([np.zeros((len(qi), 1)), row], axis=1)  # x = -1: none

    def fits(limit: np.ndarray) -> np.ndarray:
        return np.take_along_axis(padded, np.clip(K - limit, 0, K), axis=1)  # sums <= K - 1 - limit

    new = np.minimum(b, floor[qi, ci])
    gain[qi, ci] = ((ci + 1.0) * ways[qi, ci])[:, None] * (fits(new) - fits(b))
    return np.where(eligible, gain, 0.0)


def _left(pool: RecheckPool | None) -> float:
    """The recheck FLOPs the pool still allows (no pool: no limit)."""
    return np.inf if pool is None else pool.available()


def _spent(pool: RecheckPool | None) -> float:
    """The recheck FLOPs spent so far (no pool: 0)."""
    return 0.0 if pool is None else float(pool.spent)


def _floats(counts) -> np.ndarray:
    """Exact counts (ints or Python integers) as floats, for the recheck priority only."""
    return np.asarray(counts, dtype=np.float64)


class _RowLevels:
    """``_DyadicTiers.levels`` of x [b, ..., n] (mask as x), built only for the rows (first index)
    that a recheck reads, each once and counted when built: the same floats as building them all."""

    def __init__(self, dy: _DyadicTiers, x: np.ndarray, mask: np.ndarray, c: FlopCounter):
        self.dy, self.x, self.mask, self.c = dy, x, mask, c
        self.done = np.zeros(len(x), dtype=bool)
        self.levels: list[np.ndarray] = []

    def ensure(self, rows: np.ndarray) -> None:
        """Build the levels of the rows not built yet among ``rows``."""
        new = np.unique(rows[~self.done[rows]])
        if len(new) == 0:
            return
        built = self.dy.levels(self.x[new], self.mask[new], self.c)
        if not self.levels:
            self.levels = [np.full((len(self.x),) + lv.shape[1:], np.inf) for lv in built]
        for full, lv in zip(self.levels, built, strict=True):
            full[new] = lv
        self.done[new] = True

    def at(self, level: int) -> np.ndarray:
        """The mins over the blocks of ``level`` (rows not built: +inf, never read)."""
        return self.levels[level]


def _by_gain(gain: np.ndarray, cost: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The order of the cases by estimated certified inputs per FLOP, best first (ties: the
    token nearest to m first, then the given order). Uncounted floats: a choice, not a check."""
    return np.lexsort((-t, -(gain / np.maximum(cost, 1e-300))))


def _even_shares(gain: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each group's gain [nq, f] split over its cases in proportion to ``weight`` [nq, f, m]
    (zero where the weights are): the estimated inputs each case's recheck can add."""
    total = weight.sum(axis=-1, keepdims=True)
    return np.where(weight > 0, gain[:, :, None] * weight / np.where(total > 0, total, 1.0), 0.0)


class _OutputSets:
    """The outputs a token case (q, cc, t) treats exactly, and lower bounds over the others.

    Exact set of (q, t): the r outputs o != m where the worst arrangement G0(q, ., o) is smallest
    (the rivals of the max for that query, ``shared`` [nq, r]) and the r where V[t, o] is smallest
    (the rivals t itself promotes, ``own`` [m, r]); repeats allowed. The other outputs are split
    into B tiers (shared by every case: the outputs o != m ordered by min_{q, c} G0(q, c, o), in
    tiers of r, r, 2r, 4r, ... outputs), and a case is bounded per tier with each term's minimum
    over the tier (outside the exact sets), so that the worst G (near the max) and the worst V
    (near t) are not added up unless they fall in one tier. Cost O(n·(nq·k + m)·log n)."""

    def __init__(self, G0x: np.ndarray, V: np.ndarray, m: int, r: int):
        n = V.shape[1]
        self.r = r = min(r, n - 1)
        self.shared = np.argsort(G0x.min(axis=1), axis=1, kind="stable")[:, :r]  # [nq, r]; column m is +inf
        self.rest = np.ones(G0x.shape[::2], dtype=bool)  # [nq, n]
        np.put_along_axis(self.rest, self.shared, False, axis=1)
        self.rest[:, m] = False
        self.perm = np.argsort(G0x.min(axis=(0, 1)), kind="stable")[: n - 1]  # o != m, tier order
        starts, size = [0], r
        while starts[-1] + size < n - 1:
            starts.append(starts[-1] + size)
            size = size if len(starts) < 2 else 2 * size
        self.starts = np.array(starts)
        Vx = exclude_column(V[:m], m)
        self.own = np.argsort(Vx, axis=1, kind="stable")[:, :r]  # [m, r]
        np.put_along_axis(Vx, self.own, np.inf, axis=1)
        self._vx = Vx
        self.v_tiers = self._tiers(Vx)  # [m, B]: min of V[t, o] over each tier outside t's own

    def _tiers(self, x: np.ndarray) -> np.ndarray:
        """min of x [..., n] over each tier: [..., B] (+inf for a tier of +inf entries only)."""
        return np.minimum.reduceat(x[..., self.perm], self.starts, axis=-1)

    def outputs(self, a: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Exact outputs of the cases (q, t) = (a, t) [F]: [F, 2r]."""
        return np.concatenate([self.shared[a], self.own[t]], axis=1)

    def rest_min(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """min of x [F, ..., n] over each tier, outside the shared exact set of query a [F]:
        [F, ..., B] (+inf where a tier holds no such output)."""
        mask = self.rest[a].reshape((len(a),) + (1,) * (x.ndim - 2) + (x.shape[-1],))
        return self._tiers(np.where(mask, x, np.inf))


class _DyadicTiers:
    """Mins of a term over the aligned dyadic blocks of the tier order (``_OutputSets.perm``):
    level l <= _TOP_BLOCK holds the min over positions [b·2^l, (b+1)·2^l) of the order (padded
    with +inf), outside the exact sets, so that a tier that fails its bound is bounded again on
    its blocks of at most 2^_TOP_BLOCK outputs, their halves, ..., down to single outputs, and
    only the blocks that fail are split (a block's bound is below each of its outputs' values:
    every step is monotone). A single output's bound is the very float the check over every
    output computes there; an output of the exact sets is +inf (no constraint: the partial
    check computed it). Cost: at most the entries of the term, as compares."""

    def __init__(self, sets: _OutputSets, n: int):
        n1 = len(sets.perm)
        self.sets, self.n1 = sets, n1
        self.top = min(_TOP_BLOCK, ceil(log2(max(n1, 1))))
        self.size = -(-n1 >> self.top) << self.top  # n1 rounded up to a multiple of 2^top
        # the coarse tiers as aligned blocks of at most 2^top outputs: (tier, level, block)
        blocks = []
        for tier, (s0, e0) in enumerate(zip(sets.starts, list(sets.starts[1:]) + [n1], strict=True)):
            s0 = int(s0)
            while s0 < e0:
                lv = min(self.top, (s0 & -s0).bit_length() - 1 if s0 else self.top)
                while s0 + (1 << lv) > e0:
                    lv -= 1
                blocks.append((tier, lv, s0 >> lv))
                s0 += 1 << lv
        self.blocks = np.array(blocks, dtype=np.int64).reshape(-1, 3)
        self._position = np.full(n, -1)  # output -> its place in the tier order (-1: not in it)
        self._position[sets.perm] = np.arange(n1)
        # the blocks gathered level by level, then put back in tier order for the tier minima
        lv_of = self.blocks[:, 1]
        self._by_level = [(lv_, self.blocks[lv_of == lv_, 2]) for lv_ in np.unique(lv_of)]
        self._block_order = np.argsort(np.concatenate([np.nonzero(lv_of == lv_)[0] for lv_, _ in self._by_level]))
        self._tier_first = np.searchsorted(self.blocks[:, 0], np.arange(len(sets.starts)))

    def levels(
        self, x: np.ndarray, mask: np.ndarray | None, c: FlopCounter, drop: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Per level l, the min of x [..., n] (entries where ``mask`` is False: +inf) over each
        aligned block: [..., size >> l]. ``drop`` [rows, p]: outputs also taken as +inf in each
        row (first axis) of x, without a pass over x as a mask takes."""
        if mask is not None:
            x = np.where(mask, x, np.inf)
        lv = np.full(x.shape[:-1] + (self.size,), np.inf)
        lv[..., : self.n1] = x[..., self.sets.perm]
        if drop is not None:
            pos = self._position[drop]
            rows, cols = np.nonzero(pos >= 0)
            lv[rows, ..., pos[rows, cols]] = np.inf
        out = [lv]
        for _ in range(self.top):
            lv = np.minimum(lv[..., 0::2], lv[..., 1::2])
            out.append(lv)
        c.add(lv.size * ((1 << self.top) - 1), "compare")  # size - size/2^top pairwise mins per row
        return out

    def tier_mins(self, levels: list[np.ndarray], c: FlopCounter) -> np.ndarray:
        """The min over each tier from ``levels`` of x: [..., B], the floats of
        ``_OutputSets.rest_min`` of x with the same outputs left out, from one entry per block
        (about a 2^top-th of x's)."""
        parts = np.concatenate([levels[lv_][..., blk] for lv_, blk in self._by_level], axis=-1)
        blocks = parts[..., self._block_order]
        c.add(blocks.size, "compare")
        return np.minimum.reduceat(blocks, self._tier_first, axis=-1)

    def descend(self, bits: np.ndarray, fails) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bound the blocks of the tiers marked in ``bits`` [F] (bit i: tier i) and split those
        that fail, down to single outputs. ``fails(case, level, block)`` -> (bool [L], value [L]).
        Returns the failing single outputs: (case [L'], output [L'], value [L'])."""
        tier, lv, blk = self.blocks.T
        case, which = np.nonzero(((bits[:, None] >> tier[None, :]) & 1).astype(bool))
        start_lv, start_blk = lv[which], blk[which]
        cur_case = np.zeros(0, dtype=np.int64)
        cur_blk = np.zeros(0, dtype=np.int64)
        for level in range(self.top, -1, -1):
            here = start_lv == level
            cur_case = np.concatenate([cur_case, case[here]])
            cur_blk = np.concatenate([cur_blk, start_blk[here]])
            if level < self.top:  # drop blocks wholly in the padding
                inside = (cur_blk << level) < self.n1
                cur_case, cur_blk = cur_case[inside], cur_blk[inside]
            bad, value = fails(cur_case, level, cur_blk)
            cur_case, cur_blk = cur_case[bad], cur_blk[bad]
            if level == 0:
                return cur_case, self.sets.perm[cur_blk], value[bad]
            cur_case = np.repeat(cur_case, 2)
            cur_blk = (np.repeat(cur_blk, 2) << 1) + np.tile(np.array([0, 1]), len(cur_blk))
        raise AssertionError("unreachable")


def certified_sets(
    tab: IntervalTables,
    m: int,
    dist: str | Distribution,
    c: FlopCounter,
    *,
    exact_outputs: int = EXACT_OUTPUTS,
    exact_budget: float | None = None,
    head: int = 0,
    direct: np.ndarray | None = None,
    prune: bool = True,
    pool: RecheckPool | None = None,
    per_position: str = PER_POSITION,
    memo: dict | None = None,
) -> MaxCertificate:
    """The cubic proof for max token m (see ``MaxCertificate``). Entries for (q, cc) that cannot
    occur under ``dist`` are not refined.

    A token case (q, cc, t) that the output-decoupled check leaves open is redone with
    ``exact_outputs`` = r: exactly over 2r outputs (the shared rivals of m and the r that t
    promotes most) and decoupled per tier over the rest, O(k·(r + log n)) per case; the cases
    still open after that get the exact check over every output, nearest token to m first (the
    hard cases: their attention rivals the max's), at most ``exact_budget``·(m+1)·m·(k-1)/n of
    them per stage (None: all), and never those whose partial values already fail (the exact
    check recomputes them). The exact check redoes only the tiers the partial check failed:
    each is bounded again on its aligned dyadic blocks of outputs and only the blocks that fail
    are halved, down to single outputs (the decision is the check over every output's: a
    block's bound is below each of its outputs' values). ``prune``: skip the rechecks that
    cannot change the count (per-token rechecks in a group whose mixture count already reaches
    the best per-token count, and the mixture rechecks of ``_mixture_rechecks_matter``); the
    count is unchanged.
    Queries are taken in blocks of at most _BLOCK_FLOATS entries of G, rechecks in chunks of
    at most _RECHECK_FLOATS block terms. ``pool``: the FLOP allowance of the exact rechecks
    (``RecheckPool``; None: no limit), spent on the cases with the most estimated certified
    inputs per FLOP first (the inputs a group can still gain, shared over its open cases; for a
    mixture case in proportion to the bucket it may lose), at most ``_TOKEN_SHARE`` of what is
    available on the per-token ones. Cost O(n²k²·(r + log n) + budget·n²k²), and with a pool
    the rechecks at most beta times the rest.

    ``per_position``: "shared" (default) forms G, the worst arrangement per free position, on
    the shared rivals only and bounds every other output with G0 (no position skipped; the
    per-token checks there compare T's least value over positions, once per case instead of per
    position); "all" forms G on every output.

    ``memo``: the mixture counts already met (a dict kept over one proof's max tokens; None: a
    new one), looked up instead of recomputed (``Distribution.count_bucketed``).

    ``head``, ``direct``: the certificate of one head of a multi-head model (its tables, with
    ``direct`` [nq, n] in place of the direct-path lower bounds D; see ``multi_head_sets``, which
    combines the heads' certificates and so does not prune)."""
    n, k = tab.n, tab.k
    dist = get_distribution(dist)
    memo = {} if memo is None else memo
    f = k - 1  # free positions 0..k-2; the query sits at k-1
    eqke_lo, eqke_hi = tab.lo.eqke[head], tab.hi.eqke[head]  # [q, t]
    eqkp_lo, eqkp_hi = tab.lo.eqkp[head], tab.hi.eqkp[head]  # [q, i]
    if pool is not None:
        pool.attach(c)
    nq = m + 1
    qs = np.arange(nq)
    # stage: terms
    # a constant shift per q keeps every exp <= ~1 (any float is sound: it cancels in sign F)
    shift = up(eqke_hi[qs, : m + 1].max(axis=1) + eqkp_hi[qs].max(axis=1), c, inplace=True)  # [nq]
    c.add(nq * (m + 1 + k + 1), "shift")

    def weight(t_lo, t_hi, p_lo, p_hi) -> Interval:
        """exp(EQKE[q, t] + EQKP[q, i] - shift[q]) enclosed; args broadcast with q first."""
        a_lo, a_hi = down(t_lo + p_lo, c, inplace=True), up(t_hi + p_hi, c, inplace=True)
        sh = shift.reshape((nq,) + (1,) * (a_lo.ndim - 1))
        s_lo, s_hi = down(a_lo - sh, c, inplace=True), up(a_hi - sh, c, inplace=True)
        c.add(2 * s_lo.size + 2 * s_hi.size, "scores")
        return exp(Interval(s_lo, s_hi), c)

    D, V, W = diff_lower(tab, m, c, head)  # [n, n], [n, n], [k, n]
    D = D[:nq] if direct is None else direct
    # query term T_q [nq, n] and max-copy terms T_m [nq, f, n]
    wq = weight(
        eqke_lo[qs, qs][:, None], eqke_hi[qs, qs][:, None], eqkp_lo[qs, f][:, None], eqkp_hi[qs, f][:, None]
    )  # [nq, 1]
    Qt = mul_lower(wq.lo, wq.hi, sum_lower([D, V[:nq], W[f][None, :]], c), c)
    wm = weight(eqke_lo[qs, m][:, None], eqke_hi[qs, m][:, None], eqkp_lo[qs, :f], eqkp_hi[qs, :f])  # [nq, f]
    Um = sum_lower([D[:, None, :], V[m][None, None, :], W[:f][None, :, :]], c)  # [nq, f, n]
    Mt = mul_lower(wm.lo[..., None], wm.hi[..., None], Um, c)
    # c = 0: all free positions hold m
    tot0 = sum_lower([Qt] + [Mt[:, i] for i in range(f)], c)
    cert0 = exclude_column(tot0, m).min(axis=-1) > 0  # [nq]
    c.add(tot0.size, "compare")
    if f == 0 or m == 0:
        return MaxCertificate(m, k, dist, cert0)
    # G0(cc, o) = T_q(o) + the f-cc smallest T_m(i, o) over all free i (the worst arrangement)
    Ms = np.sort(Mt, axis=1)
    c.add(Mt.size * max(1, ceil(log2(max(f, 2)))), "sort")
    G0 = np.empty((nq, f, n))
    G0[:, f - 1] = acc = Qt
    for r_ in range(1, f):
        acc = down(acc + Ms[:, r_ - 1], c, inplace=True)
        c.add(acc.size, "lower sum")
        G0[:, f - 1 - r_] = acc
    G0x = exclude_column(G0, m)
    G0min = G0x.min(axis=-1)  # [nq, f]
    c.add(G0.size, "compare")
    # non-max tokens t < m at free positions j
    wt = weight(
        eqke_lo[qs, :m][:, :, None], eqke_hi[qs, :m][:, :, None], eqkp_lo[qs, None, :f], eqkp_hi[qs, None, :f]
    )  # [nq, m, f]
    Dmin = exclude_column(D, m).min(axis=-1)  # [nq]
    Vmin = exclude_column(V[:m], m).min(axis=-1)  # [m]
    Wmin = exclude_column(W[:f], m).min(axis=-1)  # [f]
    c.add(D.size + m * n + f * n, "compare")
    minU = sum_lower([Dmin[:, None, None], Vmin[None, :, None], Wmin[None, None, :]], c)  # [nq, m, f]
    tl = mul_lower(wt.lo, wt.hi, minU, c)  # [nq, m, f]: <= min_o T(t, j, o)
    ways = dist.group_ways(k, m).astype(np.float64)  # [nq, f] arrangements (floats: only the priority reads them)
    valid = ways > 0  # the (q, c) groups that occur under dist
    # the outputs treated exactly and the decoupled rest: lower bounds of D, W, G0 over it
    # stage: output sets
    sets = _OutputSets(G0x, V, m, exact_outputs)
    allow = np.inf if exact_budget is None else exact_budget * nq * m * f / n
    allowance = {"ok": allow, "mixture": allow}

    def token_terms(a: np.ndarray, t_: np.ndarray, o: np.ndarray | None) -> np.ndarray:
        """Lower bounds of T(t, j, o) for (q, t) = (a, t_) [F]: [F, f, n] over every output, or
        [F, f, 2r] over the outputs o [F, 2r]. Cost O(F·k·n) or O(F·k·r)."""
        if o is None:
            U = sum_lower([D[a][:, None, :], V[t_][:, None, :], W[:f][None, :, :]], c)
        else:
            U = sum_lower(
                [D[a[:, None], o][:, None, :], V[t_[:, None], o][:, None, :], W[:f][:, o].transpose(1, 0, 2)], c
            )
        return mul_lower(_pick(wt.lo, a, t_)[..., None], _pick(wt.hi, a, t_)[..., None], U, c)

    def rest_terms(a: np.ndarray, t_: np.ndarray) -> np.ndarray:
        """Lower bounds [F, f, B] of T(t, j, o) over each tier, outside the exact set of (a, t_)
        (+inf for a tier without such outputs: no constraint)."""
        VR = sets.v_tiers[t_][:, None, :]
        empty = ~(np.isfinite(DR[a])[:, None, :] & np.isfinite(VR) & np.isfinite(WR[a]))
        with np.errstate(invalid="ignore", over="ignore"):  # empty tiers only, replaced below
            U = sum_lower([DR[a][:, None, :], VR, WR[a]], c)
            T = mul_lower(_pick(wt.lo, a, t_)[..., None], _pick(wt.hi, a, t_)[..., None], U, c)
        return np.where(empty, np.inf, T)

    def nearest(open_: np.ndarray, stage: str, share: float) -> tuple[np.ndarray, ...]:
        """Indices (q, cc, t) of the open cases [nq', f, m] the stage's budget allows (``share``
        of what is left), nearest token to m first."""
        q_, c_, t_ = np.nonzero(open_)
        take = int(min(len(t_), np.floor(allowance[stage] * share)))
        allowance[stage] -= take
        order = np.argsort(-t_, kind="stable")[:take]
        return q_[order], c_[order], t_[order]

    # A case the partial check leaves open is redone tier by tier: each failed tier is bounded
    # again on its aligned dyadic blocks, and only the blocks that fail are split, down to single
    # outputs (``_DyadicTiers``). The decision is the exact check's over every output: a block's
    # bound is below each of its outputs' exact values (every step is monotone), and a single
    # output's bound is the exact check's float there.
    if len(sets.starts) > 62:  # tier_bits packs the failed tiers of a case into one int64
        raise MaxkError(f"cubic: {len(sets.starts)} output tiers do not fit the recheck's bit set")
    dy = _DyadicTiers(sets, n)
    chunk = max(1, min(_REFINE_CHUNK, _RECHECK_FLOATS // (f * len(dy.blocks))))  # rechecks at a time
    drop = np.concatenate([sets.shared, np.full((nq, 1), m)], axis=1)  # [nq, r+1]: outside each query's rest
    lD = dy.levels(D, None, c, drop)  # per level [nq, blocks]
    lV = dy.levels(sets._vx, None, c)  # [m, blocks]; t's own outputs and m are +inf already
    lW = dy.levels(np.broadcast_to(W[:f], (nq, f, n)), None, c, drop)  # [nq, f, blocks]
    lG0 = dy.levels(G0, None, c, drop)  # [nq, f, blocks]
    lWany = dy.levels(np.broadcast_to(W[:f].min(axis=0), (nq, n)), None, c, drop)  # [nq, blocks]: min over j too
    c.add(f * n, "compare")
    # lower bounds of D, W, G0 over each tier of the decoupled rest
    DR, WR, G0R = dy.tier_mins(lD, c), dy.tier_mins(lW, c), dy.tier_mins(lG0, c)  # [nq, B], [nq, f, B], [nq, f, B]

    def block_bound(DR_, VR_, WR_, w_lo, w_hi) -> np.ndarray:
        """mul_lower(w, D + V + W) from a block's lower bounds of the three terms (+inf for a
        block without outputs there: no constraint)."""
        empty = ~(np.isfinite(DR_) & np.isfinite(VR_) & np.isfinite(WR_))
        with np.errstate(invalid="ignore", over="ignore"):  # empty blocks only, replaced below
            T = mul_lower(w_lo, w_hi, sum_lower([DR_, VR_, WR_], c), c)
        return np.where(empty, np.inf, T)

    def block_any(aq, tt, w_lo, w_hi, level: int, blk: np.ndarray) -> np.ndarray:
        """A lower bound [L] of T(t, j, o) for every free position j over block ``blk`` (as
        ``block_terms``, with the weights' least lower end w_lo and largest upper end w_hi [L]
        and W's min over j): O(1) per block, and below each of ``block_terms``' values (every
        step is monotone, and the product takes w_lo for a nonnegative sum, w_hi otherwise)."""
        return block_bound(lD[level][aq, blk], lV[level][tt, blk], lWany[level][aq, blk], w_lo, w_hi)

    def block_terms(aq: np.ndarray, tt: np.ndarray, level: int, blk: np.ndarray) -> np.ndarray:
        """Lower bounds [L, f] of T(t, j, o) over block ``blk`` of ``level`` outside the exact
        sets of (q, t) = (aq, tt) [L] (+inf for a block without such outputs)."""
        DR_, VR_, WR_ = lD[level][aq, blk][:, None], lV[level][tt, blk][:, None], lW[level][aq, :, blk]
        return block_bound(DR_, VR_, WR_, _pick(wt.lo, aq, tt), _pick(wt.hi, aq, tt))

    def tier_bits(fails: np.ndarray) -> np.ndarray:
        """[F, B] bool -> [F] int64 with bit i set where tier i is marked."""
        return (fails.astype(np.int64) << np.arange(fails.shape[-1], dtype=np.int64)).sum(axis=-1)

    tier_sizes = np.diff(np.append(sets.starts, len(sets.perm))).astype(np.float64)

    def tier_cost(bits: np.ndarray) -> np.ndarray:
        """Uncounted estimate [F] of a recheck's cost: 1 + the outputs of the tiers marked in bits."""
        marked = (bits[:, None] >> np.arange(len(tier_sizes), dtype=np.int64)) & 1
        return 1.0 + marked @ tier_sizes

    def ranked(stage, share, open_, gain, marks):
        """The open cases (q, cc, t) the case budget allows (``share`` of what is left), best
        estimated gain per FLOP first when a pool limits the FLOPs (else nearest token first),
        with their cost estimates (None without a pool)."""
        qi, ci, ti = nearest(open_, stage, share)
        if pool is None or len(qi) == 0:
            return qi, ci, ti, None
        est = tier_cost(marks[qi, ci, ti])
        order = _by_gain(gain[qi, ci, ti], est, ti)
        return qi[order], ci[order], ti[order], est[order]

    def chunks(stage, n_cases, est, allowed):
        """Start and size of each chunk of the ranked cases to recheck: ``chunk`` at a time
        without a pool, else as many as the pool's allowance left (``allowed()``) fits."""
        s = 0
        if pool is not None:
            pool.settle(True)
        while s < n_cases:
            size = chunk if pool is None or est is None else pool.take(stage, est[s:], chunk, allowed())
            if size == 0:
                break
            before = c.total
            yield s, size
            if pool is not None and est is not None:
                pool.record(stage, c.total - before, float(est[s : s + size].sum()))
            s += size
        if pool is not None:
            pool.settle(False)

    # stage: mixture partial
    # mixture certificate: F(o) >= G0 - sum_j (-T(t_j, j, o))^+ >= G0 (1 - sum_j rho(t_j)).
    # Its decoupled and partial stages come first: the per-token stage's rechecks consult its count.
    usable = G0min > 0
    neg = np.maximum(-tl, 0.0).max(axis=-1)  # [nq, m] >= (-T(t, j, o))^+ for every j, o
    with np.errstate(over="ignore"):  # overflow to +inf (a tiny usable G0): an unusable bucket
        rho = up(neg[:, None, :] / np.where(usable, G0min, 1.0)[:, :, None], c, inplace=True)  # [nq, f, m]
    c.add(neg.size * (f + 1) + rho.size, "mixture")
    bucket = np.where(usable[:, :, None], _bucket(rho, c), MIX_BUCKETS)
    floor = np.full_like(bucket, MIX_BUCKETS)
    mix_tiers = np.zeros(bucket.shape, dtype=np.int64)  # tiers a mixture recheck must redo exactly
    # cases in (q, t, c) order: the terms of (q, t) are computed once for all its c in a chunk
    qi, ti, ci = np.nonzero(((bucket >= 2) & usable[:, :, None] & valid[:, :, None]).transpose(0, 2, 1))
    for s in range(0, len(qi), _REFINE_CHUNK):
        a, b_, t_ = qi[s : s + _REFINE_CHUNK], ci[s : s + _REFINE_CHUNK], ti[s : s + _REFINE_CHUNK]
        first, each = _pairs(a, t_, m)
        o = sets.outputs(a, t_)
        # max over j before the division: up(x / g) is monotone in x, so these are the same floats
        negT = np.maximum(-token_terms(a[first], t_[first], o[first]), 0.0).max(axis=1)[each]  # [F, 2r]
        negR = np.maximum(-rest_terms(a[first], t_[first]), 0.0).max(axis=1)[each]  # [F, B]
        with np.errstate(over="ignore"):  # ratios that overflow are +inf: unusable, as above
            r_exact = up(negT / G0x[a[:, None], b_[:, None], o], c, inplace=True).max(axis=1)
            r_tier = up(negR / G0R[a, b_], c, inplace=True)  # [F, B]; G0R >= G0min > 0
        c.add(len(first) * f * (o.shape[1] + negR.shape[1]) + 2 * (negT.size + negR.size), "mixture partial")
        bucket[a, b_, t_] = np.minimum(bucket[a, b_, t_], _bucket(np.maximum(r_exact, r_tier.max(axis=1)), c))
        # the exact rho is at least these outputs' share: rechecking helps only below that, and
        # only in the tiers whose bound's bucket exceeds it (a tier's exact values are below its bound)
        floor[a, b_, t_] = lowest = _bucket(r_exact, c)
        mix_tiers[a, b_, t_] = tier_bits(~(_bucket(r_tier, c) <= lowest[:, None]))
    # stage: mixture count
    mix_now = dist.count_bucketed(bucket, MIX_BUCKETS, m, k, c, memo)  # [nq, f]; exact rechecks only raise it

    # stage: token G and cheap check
    ok = np.zeros((nq, f, m), dtype=bool)
    cs = np.arange(1, k, dtype=np.float64)[None, :, None, None]  # copies c = 1..k-1
    r_ = sets.r
    shared_only = per_position == "shared"
    if shared_only:
        # G(c, j, o) >= G0(c, o): the f-c smallest max-copy terms over every free position are at
        # most those that skip j. So G is formed only on the shared rivals, where the worst case
        # per position decides, and G0 stands for it at the other outputs: O(k²·r) per query, not
        # O(k²·n). A case passing against min_o G0 with T's least value over j needs no G at all.
        G0rest = G0R.min(axis=-1)  # [nq, c]: over the outputs outside the shared rivals (their tiers)
        thr0 = up(-G0min / cs[0, :, 0, 0], c, inplace=True)  # [nq, c]
        tlmin = tl.min(axis=-1)  # [nq, t]: T's least value over every position and output
        ok0 = tlmin[:, None, :] > thr0[:, :, None]  # [nq, c, t]
        with np.errstate(over="ignore"):  # -inf (an empty tier: no constraint) rounds up to the least float
            ZR0 = up(-G0R / cs[..., 0], c, inplace=True)  # [nq, c, B]
        c.add(G0R.size + tl.size + thr0.size + ok0.size, "cheap check")
        c.add(ZR0.size, "partial check")
    qb = max(1, _BLOCK_FLOATS // (f * f * n))
    for q0 in range(0, nq, qb):
        blk = np.arange(q0, min(nq, q0 + qb))
        ZR: np.ndarray | None = None  # the per-position tier thresholds (G on every output only)
        if shared_only:
            sh = sets.shared[blk]  # [b, r]
            Gs = _worst_arrangements(
                np.take_along_axis(Qt[blk], sh, axis=1), np.take_along_axis(Mt[blk], sh[:, None, :], axis=2), k, c
            )  # [b, c-1, j, r]: G on the shared rivals (the same floats as on every output)
            Gmin = np.minimum(Gs.min(axis=-1), G0rest[blk][:, :, None])  # [b, c, j]
            c.add(2 * Gs.size, "compare")
        else:
            G = _worst_arrangements(Qt[blk], Mt[blk], k, c)  # [b, c-1, j, n]
            Gx = exclude_column(G, m)
            Gmin = Gx.min(axis=-1)  # [b, c, j]
            GR = sets.rest_min(Gx, blk)  # [b, c, j, B]: over each tier of the decoupled rest
            sh = np.broadcast_to(sets.shared[blk][:, None, None, :], (len(blk), f, f, r_))
            Gs = np.take_along_axis(Gx, sh, axis=-1)  # [b, c-1, j, r]
            with np.errstate(over="ignore"):  # -inf (an empty tier: no constraint) rounds up to the least float
                ZR = up(-GR / cs, c, inplace=True)  # [b, c, j, B]
            c.add(ZR.size, "partial check")
            c.add(2 * G.size, "compare")
        # G + c·T > 0 iff T > -G/c: one comparison per (q, c, t, j) against a float above -G/c
        thr = up(-Gmin / cs[:, :, 0], c, inplace=True)  # [b, c, j]
        if shared_only:  # only the cases the G0 check leaves open
            okb = ok0[blk].copy()
            # T's least value at or below the least threshold fails at its own position: no gather
            fails = tlmin[blk][:, None, :] <= thr.min(axis=-1)[:, :, None]  # [b, c, t]
            qa, ca, ta = np.nonzero(~okb & ~fails & valid[blk][:, :, None])
            okb[qa, ca, ta] = (_pick(tl, blk[qa], ta) > _pick(thr, qa, ca)).all(axis=-1)
            c.add(2 * thr.size + fails.size + len(qa) * f, "cheap check")
        else:
            cheap = tl[blk][:, None, :, :] > thr[:, :, None, :]  # [b, c, m, f]
            c.add(thr.size + cheap.size, "cheap check")
            okb = cast(np.ndarray, cheap.all(axis=-1))  # [b, c, t]
        hopeless = np.zeros_like(okb)
        ok_tiers = np.zeros(okb.shape, dtype=np.int64)  # tiers an exact recheck must redo
        # stage: token partial
        # the partial check tests T > up(-G/c) as the cheap check does: over the shared rivals
        # and the tiers the thresholds depend on (q, c, j) only, and are computed once
        with np.errstate(over="ignore"):  # -inf (an empty tier: no constraint) rounds up to the least float
            Zs = up(-Gs / cs, c, inplace=True)  # [b, c, j, r]
        c.add(Zs.size, "partial check")
        if ZR is None:  # the hardest shared rival o1 first, for every open case at once: most fail there
            rows = slice(q0, q0 + len(blk))
            o1 = sets.shared[blk, 0]  # [b]
            U1 = sum_lower([D[blk, o1][:, None, None], V[:m, o1].T[:, :, None], W[:f][:, o1].T[:, None, :]], c)
            T1 = mul_lower(wt.lo[rows], wt.hi[rows], U1, c)  # [b, t, j]: T(t, j, o1), token_terms' floats
            Z1 = np.ascontiguousarray(Zs[..., 0])  # [b, c, j]
            open1 = ~okb & valid[blk][:, :, None]
            # T's least value over j at or below the least threshold fails at its own position
            hopeless = open1 & (T1.min(axis=-1)[:, None, :] <= Z1.min(axis=-1)[:, :, None])  # [b, c, t]
            qa, ca, ta = np.nonzero(open1 & ~hopeless)
            live = (_pick(T1, qa, ta) > _pick(Z1, qa, ca)).all(axis=-1)
            hopeless[qa[~live], ca[~live], ta[~live]] = True  # the exact check computes o1 too: it fails
            c.add(T1.size + Z1.size + hopeless.size + len(qa) * f, "partial check")
            qi, ti, ci = np.nonzero((open1 & ~hopeless).transpose(0, 2, 1))  # (q, t, c) order
        else:
            qi, ti, ci = np.nonzero((~okb & valid[blk][:, :, None]).transpose(0, 2, 1))
        for s in range(0, len(qi), _REFINE_CHUNK):
            a, b_, t_ = qi[s : s + _REFINE_CHUNK], ci[s : s + _REFINE_CHUNK], ti[s : s + _REFINE_CHUNK]
            aq = blk[a]
            first, each = _pairs(a, t_, m)  # the terms of (q, t) once for all its c
            own = sets.own[t_]  # [F, r]
            Tp = token_terms(aq[first], t_[first], sets.outputs(aq[first], t_[first]))  # [U, f, 2r]
            Rp = rest_terms(aq[first], t_[first])  # [U, f, B]
            T = Tp[..., :r_][each]  # [F, f, r]: the shared rivals
            if ZR is None:  # own rivals and tiers against G0: T's least value over j
                Zo = up(-G0x[aq[:, None], b_[:, None], own] / (b_ + 1.0)[:, None], c, inplace=True)  # [F, r]
                covered = (own[:, :, None] == sets.shared[aq][:, None, :]).any(axis=-1)  # checked with G above
                own_ok = (Tp[..., r_:].min(axis=1)[each] > Zo) | covered
                rest_part = Rp.min(axis=1)[each] > ZR0[aq, b_]  # [F, B]
                c.add(Zo.size + (Tp.size - Tp[..., :r_].size) + Rp.size + own_ok.size + rest_part.size, "partial check")
            else:
                To = Tp[..., r_:][each]  # [F, f, r]
                Zo = up(
                    -Gx[a[:, None, None], b_[:, None, None], np.arange(f)[:, None], own[:, None, :]]
                    / (b_ + 1.0)[:, None, None],
                    c,
                    inplace=True,
                )
                own_ok = To > Zo
                rest_part = (Rp[each] > ZR[a, b_]).all(axis=1)  # [F, B]
                c.add(Zo.size + To.size + len(a) * Rp[0].size, "partial check")
            exact_ok = (T > _pick(Zs, a, b_)).all(axis=(1, 2)) & own_ok.all(axis=tuple(range(1, own_ok.ndim)))
            c.add(T.size, "partial check")
            tiers_fail = np.logical_not(rest_part)  # [F, B]; exact values are above the bound
            okb[a, b_, t_] = exact_ok & ~tiers_fail.any(axis=-1)
            ok_tiers[a, b_, t_] = tier_bits(tiers_fail)
            # the exact check computes these same outputs' values: it fails where they fail
            hopeless[a, b_, t_] = ~exact_ok
        # stage: token exact
        open_ = ~okb & ~hopeless & valid[blk][:, :, None]
        best = dist.count_token_groups(okb | open_, blk, m, k) if prune or pool is not None else None
        if prune:  # a recheck can matter only where the token count could beat the mixture's
            open_ &= np.asarray(best > mix_now[blk], dtype=bool)[:, :, None]
        gain = None
        if pool is not None:  # what each group can gain: its best token count above the current best
            now = np.maximum(_floats(dist.count_token_groups(okb, blk, m, k)), _floats(mix_now[blk]))
            gain = _even_shares(ways[blk] * np.maximum(_floats(best) - now, 0.0), open_.astype(np.float64))
        qi, ci, ti, est = ranked("ok", len(blk) / (nq - q0), open_, gain, ok_tiers)
        # the exact check over every output, redone only in the tiers the partial check failed:
        # the exact set passed (not hopeless) and the other tiers' values are above their bounds
        # (against G0's levels when G is formed on the shared rivals only)
        lGx = (
            None if shared_only else _RowLevels(dy, Gx, np.broadcast_to(sets.rest[blk][:, None, None, :], Gx.shape), c)
        )
        cap = 0.0  # the FLOPs this block's per-token rechecks may reach (pool.spent included)
        if pool is not None:
            pool.settle(True)
            cap = pool.spent + _TOKEN_SHARE * len(blk) / (nq - q0) * pool.available()
        for s, size in chunks("ok", len(qi), est, lambda cap=cap: min(_left(pool), cap - _spent(pool))):
            a, b_, t_ = qi[s : s + size], ci[s : s + size], ti[s : s + size]
            if lGx is not None:
                lGx.ensure(a)

            def token_fails(case, level, bk, a=a, b_=b_, t_=t_, blk=blk, lGx=lGx):
                T = block_terms(blk[a][case], t_[case], level, bk)  # [L, f]
                with np.errstate(over="ignore", invalid="ignore"):  # +inf (empty blocks): no constraint
                    if lGx is None:
                        g = lG0[level][blk[a][case], b_[case], bk][:, None]  # [L, 1]: G0, every j
                    else:
                        g = lGx.at(level)[a[case], b_[case], :, bk]  # [L, f]
                    Z = up(-g / (b_[case] + 1.0)[:, None], c, inplace=True)
                bad = ~(T > Z).all(axis=-1)
                c.add(2 * T.size, "exact check")
                return bad, bad

            case, _o, _v = dy.descend(ok_tiers[a, b_, t_], token_fails)
            fails = np.zeros(len(a), dtype=bool)
            fails[case] = True
            okb[a, b_, t_] = ~fails
        ok[blk] = okb

    # stage: mixture prune
    eligible = (bucket > np.maximum(floor, 1)) & usable[:, :, None] & valid[:, :, None]
    tokens = dist.count_token_groups(ok, qs, m, k)
    at_floor = None
    if prune:
        matter, at_floor = _mixture_rechecks_matter(bucket, floor, eligible, tokens, mix_now, m, k, dist, c, memo)
        eligible &= matter
    gain = None
    if pool is not None:  # what each group can gain: its count at the floors above the current best
        if at_floor is None:
            with c.uncounted():  # a priority, not a check; its new counts are not kept for the counted steps
                at_floor = dist.count_bucketed(
                    np.where(eligible, np.minimum(bucket, floor), bucket), MIX_BUCKETS, m, k, c, dict(memo)
                )
        can_win = _floats(at_floor) > _floats(tokens)  # [nq, f]: the group may take the mixture count
        gain = _mixture_gains(bucket, floor, eligible & can_win[:, :, None], ways)
    # stage: mixture exact
    qi, ci, ti, est = ranked("mixture", 1.0, eligible, gain, mix_tiers)
    # the exact rho's bucket: the floor, or the largest of the single outputs above it
    changed = np.zeros((nq, f), dtype=bool)  # the groups whose buckets the rechecks may lower
    for s, size in chunks("mixture", len(qi), est, lambda: _left(pool)):
        a, b_, t_ = qi[s : s + size], ci[s : s + size], ti[s : s + size]

        w_lo, w_hi = _pick(wt.lo, a, t_).min(axis=-1), _pick(wt.hi, a, t_).max(axis=-1)  # [F]: over j
        c.add(2 * len(a) * f, "mixture exact")

        def mixture_fails(case, level, bk, a=a, b_=b_, t_=t_, w_lo=w_lo, w_hi=w_hi):
            g0 = lG0[level][a[case], b_[case], bk]
            lim = floor[a, b_, t_][case]
            # first every j at once; the blocks that fails are bounded per j
            neg1 = np.maximum(-block_any(a[case], t_[case], w_lo[case], w_hi[case], level, bk), 0.0)
            with np.errstate(over="ignore", invalid="ignore"):  # as in the partial stage
                bad = _bucket(up(neg1 / g0, c, inplace=True), c) > lim
            value = np.zeros(len(case), dtype=np.int64)
            sub = np.nonzero(bad)[0]
            negB = np.maximum(-block_terms(a[case[sub]], t_[case[sub]], level, bk[sub]), 0.0).max(axis=1)
            with np.errstate(over="ignore", invalid="ignore"):
                value[sub] = _bucket(up(negB / g0[sub], c, inplace=True), c)
            c.add(2 * neg1.size + 2 * negB.size + len(sub) * f, "mixture exact")
            return value > lim, value

        case, _o, value = dy.descend(mix_tiers[a, b_, t_], mixture_fails)
        above = np.zeros(len(a), dtype=np.int64)
        np.maximum.at(above, case, value)
        bucket[a, b_, t_] = np.minimum(bucket[a, b_, t_], np.maximum(floor[a, b_, t_], above))
        changed[a, b_] = True
    return MaxCertificate(m, k, dist, cert0, ok, bucket, memo=memo, mix_known=mix_now, mix_changed=changed)


HEAD_SHARE = 0.99  # share of the all-max input's margin the heads may lose (the rest: slack)


def _head_thresholds(tab: IntervalTables, m: int, c: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds lam [h, nq, n] for max token m and whether D + sum_h lam > 0 is proved [nq]
    (o != m, D the direct path's lower bounds). lam_h = A_h - HEAD_SHARE·M0/h, with A_h(q, o) the
    float64 estimate of head h's margin contribution on the input whose free positions all hold
    m and M0 = D + sum_h A_h: any float values are sound, the check decides. Cost O(h·n²·k)."""
    H, k, nq = tab.n_heads, tab.k, m + 1
    qs = np.arange(nq)
    D = diff_lower(tab, m, c)[0][:nq]
    A = np.empty((H, nq, tab.n))
    for h in range(H):
        _, V, W = diff_lower(tab, m, c, h)
        score = (
            np.concatenate(
                [np.repeat(tab.lo.eqke[h, qs, m][:, None], k - 1, axis=1), tab.lo.eqke[h, qs, qs][:, None]], axis=1
            )
            + tab.lo.eqkp[h, qs]
        )  # [nq, k]
        a = np.exp(score - score.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        A[h] = a[:, : k - 1].sum(axis=1)[:, None] * V[m][None] + a[:, k - 1 :] * V[qs] + a @ W
        c.add(nq * k * (2 * tab.n + 6), "thresholds")
    M0 = D + A.sum(axis=0)
    lam = A - HEAD_SHARE * np.maximum(M0, 0.0)[None] / H
    c.add(4 * lam.size, "thresholds")
    total = exclude_column(sum_lower([D] + [lam[h] for h in range(H)], c), m)
    c.add(total.size, "compare")
    return lam, total.min(axis=1) > 0


def multi_head_sets(tab: IntervalTables, m: int, dist: str | Distribution, c: FlopCounter, **options) -> MaxCertificate:
    """The cubic proof for max token m of a model with several heads. Head h's share of the margin
    is A_h(o) = sum_i a_i^h u_h(x_i, i, o), a weighted mean; A_h > lam_h iff
    sum_i w_i^h (u_h - lam_h) > 0, which is the single-head margin with the direct path D
    replaced by -lam_h. So each head gets its own single-head certificate against -lam_h
    (``certified_sets(head=h, direct=-lam_h)``), and an input covered by every head's certificate,
    for a query q with D + sum_h lam_h > 0 (proved, ``_head_thresholds``), has margin
    D + sum_h A_h > D + sum_h lam_h > 0. Combined: cert0 and ok by AND over heads; the mixture
    bucket by the max over heads (a bucket sum < K then holds for every head). Cost: h times the
    single-head proof."""
    lam, lam_ok = _head_thresholds(tab, m, c)
    heads = [
        certified_sets(tab, m, dist, c, head=h, direct=-lam[h], prune=False, **options) for h in range(tab.n_heads)
    ]
    cert0 = np.logical_and.reduce([x.cert0 for x in heads]) & lam_ok
    first = heads[0]
    if first.ok is None:
        return MaxCertificate(m, first.k, first.dist, cert0)
    oks = [x.ok for x in heads if x.ok is not None]  # every head sets ok and bucket alike
    buckets = [x.bucket for x in heads if x.bucket is not None]
    ok = np.logical_and.reduce(oks) & lam_ok[:, None, None]
    bucket = np.maximum.reduce(buckets)
    bucket = np.where(lam_ok[:, None, None], bucket, MIX_BUCKETS)
    return MaxCertificate(m, first.k, first.dist, cert0, ok, bucket, memo=options.get("memo"))


def _mixture_rechecks_matter(
    bucket: np.ndarray,
    floor: np.ndarray,
    eligible: np.ndarray,
    tokens: np.ndarray,
    now: np.ndarray,
    m: int,
    k: int,
    dist,
    c,
    memo: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which eligible mixture rechecks (bool [nq, f, m]) can change the certified count. A recheck
    lowers bucket[q, cc-1, t] to no less than the floor, so with opt = the buckets at their best:
    none matters in a group whose count at opt does not exceed ``tokens`` (the per-token
    certificate's count, [nq, f]: the group takes the larger); and a token's matters only if
    some tuple holding it is counted at opt and not now. For cc = 1 that is opt_t < K <= bucket_t;
    for cc >= 2 it needs another token s of the tuple with
        opt_t + opt_s + (cc-2)·L < K <= bucket_t + b_s + (cc-2)·R,
    L the least opt, b_s = min(bucket_s, K-1) (a counted tuple's final buckets are below K) and
    R the largest such b_s (the tuple's other cc-2 tokens relaxed to those). Skipping the others
    leaves the count unchanged. Also returns the count at opt [nq, f] (``now``, the counts of
    ``bucket``, stand for it in the groups without an eligible recheck). Cost O(nq·k·(m + K²))
    plus a count of those groups."""
    K = MIX_BUCKETS
    opt = np.where(eligible, np.minimum(bucket, floor), bucket)
    at_opt = _recount(dist, opt, eligible.any(axis=-1), now, m, k, c, memo)
    groups = np.asarray(at_opt > tokens, dtype=bool)  # [nq, f]
    qi, ci = np.nonzero(groups & eligible.any(axis=-1))
    out = np.zeros_like(eligible)
    if len(qi) == 0:
        return out, at_opt
    b, o, R = bucket[qi, ci], opt[qi, ci], len(qi)  # [R, m]
    cc = (ci + 1)[:, None]
    lowest = o.min(axis=-1, keepdims=True)
    capped = np.where(o < K, np.minimum(b, K - 1), -1)  # -1: s is in no counted tuple
    reach = capped.max(axis=-1, keepdims=True)
    # for each t the largest b_s among the tokens s with opt_s < K - opt_t - (cc-2)·L, read off
    # below[r, v]: the largest capped b_s of row r with opt_s <= v
    below = _largest_below(o, capped, K)  # [R, K+1]
    limit = np.clip(K - o - (cc - 2) * lowest, 0, K + 1)  # [R, m]: opt_s < limit
    other = np.where(limit > 0, np.take_along_axis(below, np.maximum(limit - 1, 0), axis=-1), -1)
    pair = (other >= 0) & (b + other + (cc - 2) * reach >= K)
    single = (o < K) & (b >= K)
    c.add(b.size * 12 + R * (K + 1) ** 2, "mixture")
    out[qi, ci] = eligible[qi, ci] & np.where(cc == 1, single, pair)
    return out, at_opt


def _largest_below(key: np.ndarray, value: np.ndarray, K: int, rows_at_once: int = 2048) -> np.ndarray:
    """[R, K+1]: entry (r, v) the largest value[r, s] over the s with key[r, s] <= v, -1 if none
    (key [R, m] ints in [0, K], value [R, m] ints in [-1, K-1]), from a histogram of the (key,
    value) pairs per row. Cost O(R·(m + K²))."""
    R, width = len(key), K + 1
    out = np.empty((R, width), dtype=np.int64)
    for r0 in range(0, R, rows_at_once):
        k_, v_ = key[r0 : r0 + rows_at_once], value[r0 : r0 + rows_at_once]
        n_ = len(k_)
        cell = (np.arange(n_)[:, None] * width + k_) * width + (v_ + 1)
        held = np.bincount(cell.ravel(), minlength=n_ * width * width).reshape(n_, width, width) > 0
        top = np.where(held.any(axis=-1), width - 1 - np.argmax(held[..., ::-1], axis=-1) - 1, -1)  # [n_, K+1]
        out[r0 : r0 + n_] = np.maximum.accumulate(top, axis=-1)
    return out


def _recount(dist: Distribution, bucket, rows, known, m: int, k: int, c: FlopCounter, memo: dict | None):
    """``dist.count_bucketed`` of ``bucket`` [nq, f, m] in the groups ``rows`` [nq, f] marks, and
    ``known`` (their counts when nothing changed) in the others: the counts of every group, with
    only the marked ones counted (the others' buckets made unusable: immediate zeros)."""
    part = dist.count_bucketed(np.where(rows[:, :, None], bucket, MIX_BUCKETS), MIX_BUCKETS, m, k, c, memo)
    return np.where(rows, part, known)


def _pick(x: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """x[i, j] (x [a, b, ...], i and j [F] ints): [F, ...], gathered as rows of x seen as
    [a·b, ...], which numpy does ~3x faster than the paired fancy index."""
    return np.take(x.reshape((-1,) + x.shape[2:]), i * x.shape[1] + j, axis=0)


def _pairs(a: np.ndarray, t: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (q, t) pairs among the cases (a, t) [F]: (first [U], each [F]) with case i's
    pair that of case first[each[i]], so a term of (q, t) is computed once for every c."""
    _, first, each = np.unique(a * max(m, 1) + t, return_index=True, return_inverse=True)
    return first, each.reshape(-1)


def _bucket(rho: np.ndarray, c: FlopCounter) -> np.ndarray:
    """ceil(K·rho) as ints, capped at K (= unusable); rho >= 0. Rounded up, so the sum of the
    buckets of a tuple is < K only if the sum of the rhos is < 1."""
    with np.errstate(over="ignore"):  # a rho near the float limit goes to +inf: unusable
        x = np.ceil(up(rho * MIX_BUCKETS, c, inplace=True))
    c.add(2 * x.size, "mixture")
    return np.where(x < MIX_BUCKETS, x, MIX_BUCKETS).astype(np.int64)  # NaN: unusable


def prove_cubic(
    model,
    dist: Distribution,
    *,
    counter: FlopCounter,
    exact_outputs: int = EXACT_OUTPUTS,
    exact_budget: float = EXACT_BUDGET,
    recheck_share: float = RECHECK_SHARE,
    per_position: str = PER_POSITION,
    shards: int = SHARDS,
) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``.
    Options: ``exact_outputs`` (r >= 1), ``exact_budget`` and ``recheck_share`` (negative: no
    limit; both negative: every recheck, the unbounded proof), ``per_position`` ("shared" or
    "all"), ``shards`` (>= 1), as ``cubic_certified``."""
    if exact_outputs < 1:
        raise MaxkError(f"exact_outputs must be at least 1, not {exact_outputs}")
    if per_position not in ("shared", "all"):
        raise MaxkError(f"per_position must be 'shared' or 'all', not {per_position!r}")
    return cubic_certified(
        model,
        dist,
        counter,
        exact_outputs=exact_outputs,
        exact_budget=exact_budget,
        recheck_share=recheck_share,
        per_position=per_position,
        shards=shards,
    )
