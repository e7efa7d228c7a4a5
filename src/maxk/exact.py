"""Exact evaluation over every input of a distribution (DESIGN §4).

``evaluate`` walks all n^k inputs through the circuit tables, one query token q at a time. The
k-1 free positions are split into group A (positions 0..k-3) and group B (position k-2 and the
query at k-1). Each group's token tuples get, per head, the attention-weighted mean of their values
and the log of their total attention weight (float64, built position by position with the same
stable lerp as below; about n^(k-2)·n numbers per head). An input (A row i, B row j) has the logits

    logits = sum_h lerp(mean_B[h, j], mean_A[h, i], sigmoid(lse_A[h, i] - lse_B[h, j]))

(direct path folded into head 0): one fused pass per head, exact however sharp the attention (the
weights are a difference of logs, never an exponential of a score). Tiles of [inputs, n] logits
sized for a core's L2 cache then take two more cheap steps and one fused pass:

    lab = logits[label]; logits[label] = v = lab - 32; lo = log_softmax(logits)[label]

(the lowered label keeps the softmax sum dominated by the *other* outputs, so their total is not
lost to rounding next to the label's probability of ~1), from which, per input,

    z = sum_{o != label} exp(logit_o - lab) = exp(v - lab - lo) (1 - exp(lo))
    loss = log(1 + z),  probability of the true max = 1 / (1 + z).

Correct (the true max's logit strictly above every other) is read from z, as max_other <= log z +
lab <= max_other + log(n-1), except in a narrow band around [1, n-1] where those inputs are
checked directly; when more than a few percent of inputs need that (untrained models), a third
pass takes the row maxima instead. Cost: O(n^(k+1)·h) flops and n^(k+1) exponentials, two passes
over memory that stays in cache; memory O(n^(k-1)·h) for the group tables (built in pieces when
large) plus fixed buffers. Query tokens are shared between worker threads, each running torch
single-threaded on its own tiles (no synchronisation between cores inside an operation).

``evaluate_forward`` is the straightforward way: the model's forward pass on every input, in batches.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .circuits import CircuitTables, circuit_tables
from .distributions import Distribution, resolve
from .errors import MaxkError
from .results import EvalResult
from .torch_threads import single_threaded

EXHAUSTIVE_LIMIT = 4 * 10**9  # sequences; beyond this, use sampling
_INDEX_BYTES = 1 << 29  # bound on group A's index arrays, which grow as n^(k-2)
_TILE_BYTES = 1 << 19  # logits per tile: half a core's L2 (the tile is reused by every pass)
_ROWS = 1 << 18  # inputs per block of per-input bookkeeping (a few MB)
_GROUP_ELEMS = 1 << 23  # float64 group-table entries built at once (64 MB)
_SHIFT = 32.0  # the true max's logit is lowered by this before the softmax over all logits
_BAND_LO, _BAND_HI = math.exp(-1 / 64), math.exp(1 / 64)  # margins of the band of z where
# correctness is decided by a direct check (z has a relative error ~1e-5 in float32)
_BAND_SHARE = 0.02  # above this share of inputs in the band, find the largest logit instead
_NEAR = 1e-3  # with the largest logit found: closer calls than this (relative) are redone in float64


def _as_tables(model_or_tables) -> CircuitTables:
    return model_or_tables if isinstance(model_or_tables, CircuitTables) else circuit_tables(model_or_tables)


def _unravel(idx: np.ndarray, n: int, width: int) -> np.ndarray:
    """Flat indices [b] -> base-n digits [b, width], most significant first."""
    out = np.empty((idx.shape[0], width), dtype=np.int64)
    rest = idx.copy()
    for j in range(width - 1, -1, -1):
        out[:, j] = rest % n
        rest //= n
    return out


class _Tables:
    """The circuit tables as torch tensors on one device (float64)."""

    def __init__(self, tab: CircuitTables, dev: torch.device):
        def t(x):
            return torch.as_tensor(x, dtype=torch.float64, device=dev)

        self.eqke, self.eqkp, self.evou, self.pvou, self.eupu = map(
            t, (tab.eqke, tab.eqkp, tab.evou, tab.pvou, tab.eupu)
        )
        self.H, self.n, self.k = tab.n_heads, tab.n, tab.k

    def _atom(self, q: int, t: torch.Tensor, p: int):
        """Values [h, g, n_out] and scores [h, g] of tokens t [g] at position p (query q)."""
        return self.evou[:, t, :] + self.pvou[:, p, None, :], self.eqke[:, q, t] + self.eqkp[:, q, p, None]

    def group(self, q: int, tok: torch.Tensor | None, positions: range, with_query: bool):
        """For the token tuples at ``positions`` (plus the query q at k-1 if ``with_query``):
        per head the attention-weighted mean of their values [h, g, n_out] (direct path folded
        into head 0) and the log of their total attention weight [h, g]. Float64. ``tok`` [g, p]
        lists the tuples, or None for all n^p of them in lexicographic order (built as a product,
        cheaper). A group of no positions has weight 0 (lse = -inf). Cost O(h·g·p·n)."""
        H, n, dev = self.H, self.n, self.evou.device
        g = n ** len(positions) if tok is None else tok.shape[0]
        # merging two disjoint groups: mean = lerp(mean_1, mean_2, share of group 2), stable
        # however far apart the scores are, and exact when group 1 is empty (lse = -inf)
        if with_query:
            mean, lse = self._atom(q, torch.tensor([q], device=dev), self.k - 1)  # [h, 1, n]
        else:
            mean = torch.zeros(H, 1, n, dtype=torch.float64, device=dev)
            lse = torch.full((H, 1), -math.inf, dtype=torch.float64, device=dev)
        if tok is None:  # all tuples: add positions last to first, the new one most significant
            every = torch.arange(n, device=dev)
            for p in reversed(positions):
                val, score = self._atom(q, every, p)  # [h, n, n], [h, n]
                w = torch.sigmoid(score[:, :, None] - lse[:, None, :])  # [h, n, g']
                mean = torch.lerp(mean[:, None], val[:, :, None], w[..., None]).reshape(H, -1, n)
                lse = torch.logaddexp(lse[:, None, :], score[:, :, None]).reshape(H, -1)
        else:
            mean, lse = mean.expand(H, g, n).clone(), lse.expand(H, g).clone()
            for j, p in enumerate(positions):
                val, score = self._atom(q, tok[:, j], p)
                torch.lerp(mean, val, torch.sigmoid(score - lse).unsqueeze(-1), out=mean)
                lse = torch.logaddexp(lse, score)
        mean[0] += self.eupu[q]
        return mean, lse


class _Plan:
    """Everything about an evaluation that does not depend on the query token."""

    def __init__(self, tab: CircuitTables, dist: Distribution, dtype: torch.dtype, dev: torch.device):
        n, k = tab.n, tab.k
        self.n, self.k, self.H, self.dist, self.dtype, self.dev = n, k, tab.n_heads, dist, dtype, dev
        self.T = _Tables(tab, dev)
        f = k - 1
        self.a = f - min(1, f)  # group A: positions 0..a-1; group B: a..k-2 and the query
        self.b = f - self.a
        self.tok_a_all = _unravel(np.arange(n**self.a), n, self.a)
        self.tok_b_all = _unravel(np.arange(n**self.b), n, self.b)
        item = torch.empty((), dtype=dtype).element_size()
        self.tile = max(n, _TILE_BYTES // item)  # logits per tile (at least one row)
        self._rows_a = self._rows(self.tok_a_all, None)  # group A's rows do not depend on q

    def _rows(self, tok: np.ndarray, q: int | None):
        """Rows of a group in the distribution's support (bool mask, or None for all), their token
        tuples (query not included), the max token of each (query included) and the keys that say
        which rows of the two groups combine (``Distribution.part_keys``; torch, on the device)."""
        full = tok if q is None else np.c_[tok, np.full(len(tok), q)]
        keep = self.dist.support_rows(full, query_last=q is not None)
        if keep is not None:
            tok, full = tok[keep], full[keep]
        top = torch.as_tensor(full.max(axis=1) if full.shape[1] else np.full(len(full), -1), device=self.dev)
        keys = self.dist.part_keys(full, self.n, query_last=q is not None)
        masks = torch.as_tensor(keys, device=self.dev) if keys is not None else None
        return keep, tok, top, masks

    def group(self, q: int, with_query: bool) -> _Group:
        """Group A (``with_query`` False) or B of query q, restricted to the inputs of ``dist``."""
        rows = self._rows(self.tok_b_all, q) if with_query else self._rows_a
        positions = range(self.a, self.k - 1) if with_query else range(self.a)
        return _Group(self, q, rows, positions, with_query)


class _Group:
    """One group's rows for one query: token tuples, their maxima, and the tables of any range of
    rows (built all at once when they fit in _GROUP_ELEMS, else on demand)."""

    def __init__(self, plan: _Plan, q, rows, positions, with_query):
        self.plan, self.q, self.positions, self.with_query = plan, q, positions, with_query
        dev = plan.dev
        keep, self.tok, self.max, self.masks = rows  # tok: [g, p] without the query
        self.size = len(self.tok)
        self.full = None
        if len(plan.tok_a_all if not with_query else plan.tok_b_all) * plan.H * plan.n <= _GROUP_ELEMS:
            mean, lse = plan.T.group(q, None, positions, with_query)  # every tuple, as a product
            if keep is not None:
                rows = torch.as_tensor(np.flatnonzero(keep), device=dev)
                mean, lse = mean[:, rows], lse[:, rows]
            self.full = (mean.to(plan.dtype), lse)

    def rows(self, lo: int, hi: int):
        """Means [h, hi-lo, n_out] (evaluation dtype) and log weights [h, hi-lo] (float64)."""
        if self.full is not None:
            return self.full[0][:, lo:hi], self.full[1][:, lo:hi]
        tok = torch.as_tensor(self.tok[lo:hi], device=self.plan.dev)
        mean, lse = self.plan.T.group(self.q, tok, self.positions, self.with_query)
        return mean.to(self.plan.dtype), lse


def _query_stats(plan: _Plan, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(number correct, sum of soft accuracy, sum of loss) over every input with query token q."""
    dev, n, H = plan.dev, plan.n, plan.H
    A, B = plan.group(q, False), plan.group(q, True)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    soft = torch.zeros((), dtype=torch.float64, device=dev)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    # blocks of ia rows of A times jb rows of B: per-input bookkeeping of ~_ROWS inputs at a time
    jb = max(1, min(B.size, _GROUP_ELEMS // (H * n)))
    ia = max(1, min(A.size, _ROWS // jb, _GROUP_ELEMS // (H * n)))
    buf = torch.empty(plan.tile, dtype=plan.dtype, device=dev)
    tmp = torch.empty(plan.tile, dtype=plan.dtype, device=dev) if H > 1 else None
    with_max = False
    for j0 in range(0, B.size, jb):
        j1 = min(B.size, j0 + jb)
        mb, lb = B.rows(j0, j1)
        for i0 in range(0, A.size, ia):
            i1 = min(A.size, i0 + ia)
            ma, la = A.rows(i0, i1)
            # A's share of attention [h, ia, jb]: the difference of log weights in float64 (they
            # can be hundreds apart), the sigmoid in the evaluation dtype
            lam = torch.sub(la[:, :, None], lb[:, None, :]).to(plan.dtype).sigmoid_()
            label = torch.maximum(A.max[i0:i1, None], B.max[None, j0:j1])  # [ia, jb]
            recheck = _Recheck(plan, q, A.tok[i0:i1], B.tok[j0:j1], label)
            good, l_, p, n_band = _block_stats(plan, ma, mb, lam, label, buf, tmp, with_max, recheck)
            # direct checks cost more than one more pass once more than a few inputs need them
            with_max = with_max or n_band > _BAND_SHARE * label.numel()
            if A.masks is not None:  # only some rows of the two groups form an input
                valid = plan.dist.parts_compatible(A.masks[i0:i1], B.masks[j0:j1])
                good &= valid
                l_, p = l_.mul_(valid), p.mul_(valid)
            correct += good.sum()
            soft += p.sum()
            loss += l_.sum(dtype=torch.float64)
    return correct, soft, loss


def _block_stats(plan: _Plan, ma, mb, lam, label, buf, tmp, with_max: bool, recheck: _Recheck):
    """Per input of a block (A rows ma [h, ia, n], B rows mb [h, jb, n], A's share of attention
    lam [h, ia, jb], labels [ia, jb]): correct (bool), probability of the true max, and loss,
    each [ia, jb], and the number of inputs that needed a direct check. The logits go through
    ``buf`` one L2-sized tile at a time, in two passes (three ``with_max``):

    1. logits = sum_h lerp(mb[h, j], ma[h, i], lam[h, i, j]); take lab = logits[label];
    2. lower logits[label] to v = lab - _SHIFT, (with_max: top = max of the row), log-softmax in
       place, take lo = log-probability of v.

    Inputs whose correctness the evaluation dtype cannot settle (z in the band, or with_max a
    top logit within _NEAR of the label's) are decided by ``recheck`` in float64 from scratch.
    """
    n, H, dev, dtype = plan.n, plan.H, label.device, plan.dtype
    ia, jb = label.shape
    R = ia * jb
    lab = torch.empty(R, dtype=dtype, device=dev)  # the true max's logit
    lo = torch.empty(R, dtype=dtype, device=dev)  # log-probability of v
    top = torch.empty(R, dtype=dtype, device=dev) if with_max else lab  # max(other logits, v)
    # tiles: ti whole rows of A when one A row fits, else pieces of tj inputs of one row; each
    # tile is a contiguous range of the block's inputs (row-major)
    if jb * n <= plan.tile:
        ti = max(1, min(ia, plan.tile // (jb * n)))
        per = ti * jb
        # flat index of each label's logit within its tile (every tile repeats the pattern)
        base = torch.arange(0, per * n, n, device=dev)
        flat = torch.empty(R, dtype=torch.int64, device=dev)
        whole = R - R % per
        torch.add(label.view(-1)[:whole].view(-1, per), base, out=flat[:whole].view(-1, per))
        torch.add(label.view(-1)[whole:], base[: R - whole], out=flat[whole:])
        mb1 = [mb[h][None] for h in range(H)]  # [1, jb, n]
        ma_t = [ma[h][:, None].split(ti) for h in range(H)]  # [ti, 1, n]
        lam_t = [lam[h][..., None].split(ti) for h in range(H)]  # [ti, jb, 1]
        tiles = (
            ([(mb1[h], ma_t[h][t], lam_t[h][t]) for h in range(H)], (min(ti, ia - t * ti), jb))
            for t in range(len(ma_t[0]))
        )
        ranges = [per] * (R // per) + ([R % per] if R % per else [])
    else:
        tj = max(1, plan.tile // n)
        flat = (label + (torch.arange(jb, device=dev) % tj * n)).view(-1)
        mb_t = [mb[h][None].split(tj, dim=1) for h in range(H)]  # [1, tj, n]
        tiles = (
            ([(mb_t[h][t], ma[h][i : i + 1, None], lam_h_t[h][t]) for h in range(H)], (1, min(tj, jb - t * tj)))
            for i in range(ia)
            for lam_h_t in [[lam[h][i : i + 1, :, None].split(tj, dim=1) for h in range(H)]]
            for t in range(len(mb_t[0]))
        )
        ranges = ([tj] * (jb // tj) + ([jb % tj] if jb % tj else [])) * ia
    lower = torch.full((max(ranges),), -_SHIFT, dtype=dtype, device=dev)
    in_place = dev.type == "cpu"
    for (ops, shape), idx, lab_t, lo_t, top_t in zip(
        tiles, flat.split(ranges), lab.split(ranges), lo.split(ranges), top.split(ranges), strict=True
    ):
        rows = idx.shape[0]
        Lf = buf[: rows * n]
        L3 = Lf.view(*shape, n)
        torch.lerp(*ops[0], out=L3)
        for h in range(1, H):
            t3 = tmp[: rows * n].view(*shape, n)
            torch.lerp(*ops[h], out=t3)
            L3.add_(t3)
        L = Lf.view(rows, n)
        torch.take(Lf, idx, out=lab_t)
        Lf.index_add_(0, idx, lower[:rows])  # v = lab - _SHIFT
        if with_max:
            torch.amax(L, 1, out=top_t)
        if in_place:  # the CPU kernel reads each row before it writes it
            torch.log_softmax(L, 1, out=L)
        else:
            L.copy_(torch.log_softmax(L, 1))
        torch.take(Lf, idx, out=lo_t)
    # lo = v - log(e^v + S) with S = sum_{o != label} e^logit_o, so the ratio of the other
    # outputs' probability to the true max's is z = S / e^lab = e^(v - lab - lo) (1 - e^lo);
    # with t = v - lab - lo, evaluated as e^min(t, 80) (1 - e^lo) (past 80, 1 + z = e^t)
    t = (lab - _SHIFT).sub_(lab).sub_(lo)
    z = torch.exp(torch.clamp(t, max=80.0)).mul_(torch.exp(lo).neg_().add_(1.0))
    if with_max:  # max(others, v) < lab exactly when every other logit is below lab
        good, n_band = top < lab, 0
        near = ((lab - top).abs() <= _NEAR * (lab.abs() + 1.0)).nonzero().squeeze(1)
        if near.numel():
            good[near] = recheck.rows(near)[1]
    else:  # the sign of lab - max_other follows from z, as e^max_other <= S <= (n-1) e^max_other,
        # except in a band around [1, n-1]: those inputs are checked directly
        good = z < _BAND_LO
        band = (z >= _BAND_LO) & (z <= (n - 1) * _BAND_HI)
        rows = band.nonzero().squeeze(1)
        n_band = rows.numel()
        if n_band:
            z_rows, good[rows] = recheck.rows(rows)
            z[rows] = z_rows.to(z.dtype)
    loss = torch.log1p(z).add_(t.sub_(80.0).clamp_(min=0.0))  # log(1 + z)
    prob = torch.add(z.double(), 1.0).reciprocal_()  # of the true max; float64 keeps 1 - p
    return good, loss, prob, n_band


class _Recheck:
    """Inputs of one block (query q, A rows ``tok_a`` [ia, a], B rows ``tok_b`` [jb, b], labels
    [ia, jb]) recomputed from the tables in float64, for those whose correctness the evaluation
    dtype cannot settle: in float32 the logits carry errors ~1e-6 of their size, so a near-tie
    can come out either way (one input in 1.7e7 did, on a recipe-trained seed)."""

    def __init__(self, plan: _Plan, q: int, tok_a: np.ndarray, tok_b: np.ndarray, label: torch.Tensor):
        self.plan, self.q, self.tok_a, self.tok_b, self.label = plan, q, tok_a, tok_b, label

    def rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z = sum_{o != label} exp(logit_o - logit_label) in float64, correct) for the inputs
        ``rows`` (flat indices into the block). Cost O(h·k·n) per input."""
        plan, jb = self.plan, self.label.shape[1]
        zs, goods = [], []
        for r in rows.split(max(1, plan.tile // plan.n)):
            idx = r.cpu().numpy()
            tok = np.concatenate([self.tok_a[idx // jb], self.tok_b[idx % jb]], axis=1)
            tok_t = torch.as_tensor(tok, dtype=torch.int64, device=plan.dev)
            mean, _ = plan.T.group(self.q, tok_t, range(plan.k - 1), True)  # every position
            L = mean.sum(0)  # [r, n] float64 logits (the direct path is in head 0)
            lbl = self.label.view(-1)[r, None]
            lab = L.gather(1, lbl).squeeze(1)
            L.scatter_(1, lbl, -math.inf)
            other = L.amax(1)
            zs.append(torch.exp(other - torch.log_softmax(L, 1).amax(1) - lab))
            goods.append(lab > other)
        return torch.cat(zs), torch.cat(goods)


def evaluate(
    model_or_tables,
    dist: str | Distribution = "uniform",
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Exact accuracy, soft accuracy and mean loss over every input of ``dist``.

    ``model_or_tables``: a model or its ``CircuitTables``. Correct means the true max's logit is
    strictly above every other logit; soft accuracy is the mean probability of the true max; loss
    the mean cross-entropy. Cost: O(n^(k+1)·h) flops and n^(k+1) exponentials (n = 64, k = 4:
    well under a second on 2 cores); memory: group tables of at most _GROUP_ELEMS float64 numbers
    and a few buffers of _ROWS inputs and _TILE_BYTES, per worker (a few hundred MB at most).
    ``dtype`` (of the logits; group tables are always float64) defaults to float64 for small
    problems (n^(k+1) <= 2^24) and float32 otherwise (figures then agree with float64 to ~1e-6).
    On the CPU the query tokens are shared among ``torch.get_num_threads()`` worker threads
    (torch runs single-threaded in each meanwhile; the setting is restored afterwards). On a GPU
    (``device="cuda"``) the same tensor operations run in one thread. ``progress(done, total)``
    is called after each query token, from the calling thread.
    """
    t0 = time.perf_counter()
    cfg = model_or_tables.cfg
    n, k = cfg.d_vocab, cfg.n_ctx
    d = resolve(dist, n, k)
    N = d.n_sequences(n, k)
    if n**k > EXHAUSTIVE_LIMIT:
        raise MaxkError(
            f"exhaustive evaluation needs {n**k:.3g} inputs (limit {EXHAUSTIVE_LIMIT:.0e}); "
            "use sampling instead (--samples N)"
        )
    index_bytes = n ** max(k - 2, 0) * (k + 1) * 8  # group A's token tuples, maxima and masks
    if index_bytes > _INDEX_BYTES:
        raise MaxkError(
            f"exhaustive evaluation for n={n}, k={k} would index {n ** max(k - 2, 0):.3g} token tuples "
            f"({index_bytes / 2**30:.1f} GiB, limit {_INDEX_BYTES / 2**30:.1f} GiB); use sampling instead (--samples N)"
        )
    tab = _as_tables(model_or_tables)
    if dtype is None:
        dtype = torch.float64 if n ** (k + 1) <= 1 << 24 else torch.float32
    dev = torch.device(device) if device is not None else torch.device("cpu")
    plan = _Plan(tab, d, dtype, dev)
    results: list = [None] * n
    if dev.type == "cpu" and torch.get_num_threads() > 1 and n > 1:
        with single_threaded() as workers, ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(_inference, plan, q) for q in range(n)]
            try:
                for q, fut in enumerate(futures):
                    results[q] = fut.result()
                    if progress is not None:
                        progress(q + 1, n)
            except BaseException:  # an error or an interrupt: do not run the remaining queries
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        with torch.inference_mode():
            for q in range(n):
                results[q] = _query_stats(plan, q)
                if progress is not None:
                    progress(q + 1, n)
    correct = sum(int(c) for c, _, _ in results)  # summed in query order: deterministic
    soft_sum = math.fsum(float(s) for _, s, _ in results)
    loss_sum = math.fsum(float(l_) for _, _, l_ in results)
    return _totals_result("exhaustive", d, N, t0, correct, soft_sum, loss_sum)


def _totals_result(
    method: str, d: Distribution, N: int, t0: float, correct: int, soft_sum: float, loss_sum: float
) -> EvalResult:
    """The record of an evaluation over all N inputs from its totals (timed from ``t0``)."""
    return EvalResult(
        method=method,
        dist=d.name,
        n_sequences=N,
        seconds=time.perf_counter() - t0,
        correct=correct,
        accuracy=correct / N,
        soft_accuracy=soft_sum / N,
        loss=loss_sum / N,
    )


def _inference(plan: _Plan, q: int):
    with torch.inference_mode():
        return _query_stats(plan, q)


def all_sequences(n: int, k: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Sequences number start..stop-1 of all n^k, in lexicographic order: [stop-start, k] int64."""
    stop = n**k if stop is None else stop
    return _unravel(np.arange(start, stop, dtype=np.int64), n, k)


def _accumulate(logits: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None):
    """logits [..., n] (modified in place), label [...] -> (correct, sum soft, sum loss)."""
    lm = logits.gather(-1, label.unsqueeze(-1)).squeeze(-1)
    logits.scatter_(-1, label.unsqueeze(-1), float("-inf"))
    other = logits.amax(-1)
    top = torch.maximum(lm, other)
    logits.sub_(top.unsqueeze(-1)).exp_()
    total = logits.sum(-1, dtype=torch.float64) + torch.exp((lm - top).double())
    lse = top.double() + torch.log(total)
    loss = lse - lm.double()
    soft = torch.exp(-loss)
    good = other < lm
    if valid is not None:
        good, soft, loss = good & valid, soft * valid, loss * valid
    return int(good.sum()), float(soft.sum()), float(loss.sum())


@torch.no_grad()
def evaluate_forward(
    model, dist: str | Distribution = "uniform", *, batch: int = 1 << 16, dtype: torch.dtype = torch.float32
) -> EvalResult:
    """The straightforward way: the model's forward pass on every input, in batches.

    Cost: n^k forward passes, O(n^k·(k·d·(d + n) + k²·d)). Used as the reference and the baseline.
    """
    t0 = time.perf_counter()
    n, k = model.cfg.n, model.cfg.k
    d = resolve(dist, n, k)
    N = d.n_sequences(n, k)
    m = copy.deepcopy(model).to(dtype)
    correct, soft_sum, loss_sum = 0, 0.0, 0.0
    for start in range(0, n**k, batch):
        toks_np = all_sequences(n, k, start, min(start + batch, n**k))
        toks = torch.as_tensor(toks_np)
        logits = m.last_logits(toks)
        label = toks.max(dim=1).values
        support = d.support_rows(toks_np, query_last=True)
        valid = None if support is None else torch.as_tensor(support)
        c, s, l_ = _accumulate(logits.clone(), label, valid)
        correct += c
        soft_sum += s
        loss_sum += l_
    return _totals_result("forward", d, N, t0, correct, soft_sum, loss_sum)
