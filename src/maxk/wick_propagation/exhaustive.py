"""Wick values of every input of a distribution, in ``Distribution.enumerate`` order, with shared prefixes.

An input is (A, j, q): the tokens A at positions 0..k−3, j at k−2 and the query q. Per head and
query, group A's attention output MA[A, q] and log weight lseA[A, q] are formed once for every A
(one batched product), and group B's MB[j, q], lseB[j, q] once for every (j, q); an input's
attention output is then one stable blend

    A_h = lerp(MB[j, q], MA[A, q], σ(lseA − lseB)),   log D_h = logaddexp(lseA, lseB)

(as in ``exact``), after which ``formula`` gives its Wick values. Inputs run in blocks of A rows,
shared among worker threads, each written to its contiguous slice of the output arrays in
lexicographic order (under ``distinct`` the inputs with a repeated token are computed and
dropped).
Cost O(N·h·n) after O(n^k·h) for the group tables (memory n^k·h float64 numbers, ≤ 160 MB a
head for n^k ≤ 2·10^7)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..flops import FlopCounter
from ..torch_threads import single_threaded
from .formula import (
    ELL,
    UNSHIFTED_MAX,
    Buffers,
    Reductions,
    TorchPieces,
    TorchTables,
    combine,
    fix_correct,
    flops_per_input,
    reduce_wires,
)
from .rows import RowIndex, assign_columns, narrow

_TILE = 1 << 16  # numbers per [inputs, n] tile buffer (one query's inputs): 512 KB, in L2 on each core


def _groups(tt: TorchTables, n: int, k: int):
    """Per head: MA [nA, n_q, n], lseA [nA, n_q] (group A: positions 0..k−3, every tuple A in
    lexicographic order) and MB [n_j, n_q, n], lseB [n_j, n_q] (position k−2 and the query), with
    the direct path folded into head 0; and the tuples [nA, k−2]."""
    H = tt.eqke.shape[0]
    a = k - 2
    tup = torch.cartesian_prod(*[torch.arange(n)] * a) if a > 1 else torch.arange(n)[:, None]
    qs = torch.arange(n)
    out = []
    for h in range(H):
        E, P = tt.evou[h], tt.pvou[h]
        s = tt.eqke[h][:, tup] + tt.eqkp[h][:, None, :a]  # [n_q, nA, a]
        lseA = torch.logsumexp(s, 2)
        att = torch.exp(s - lseA[..., None]).permute(1, 0, 2).contiguous()  # [nA, n_q, a]
        V = E[tup] + P[:a][None]  # [nA, a, n]
        MA = torch.bmm(att, V)  # [nA, n_q, n]
        sj = tt.eqke[h] + tt.eqkp[h][:, k - 2 : k - 1]  # [n_q, n_j]
        sq = (tt.eqke[h][qs, qs] + tt.eqkp[h][:, k - 1])[:, None]  # [n_q, 1]
        lseB = torch.logaddexp(sj, sq)
        wj, wq = torch.exp(sj - lseB).T, torch.exp(sq - lseB).T  # [n_j, n_q]
        MB = wj[..., None] * (E + P[k - 2])[:, None, :] + wq[..., None] * (E + P[k - 1])[None, :, :]
        if h == 0:
            MA += tt.eupu[None]
            MB += tt.eupu[None]
        out.append((MA.contiguous(), lseA.T.contiguous(), MB.contiguous(), lseB.T.contiguous()))
    return out, tup


def _unshifted(groups) -> bool:
    """Whether every input's logits lie within ±``UNSHIFTED_MAX``: each head's attention output
    is a convex combination of its group tables' rows, so Σ_h max |MA_h|, |MB_h| bounds them."""
    bound = sum(max(float(MA.abs().max()), float(MB.abs().max())) for MA, _, MB, _ in groups)
    return bound <= UNSHIFTED_MAX


def _block(
    tp: TorchPieces,
    ix: RowIndex,
    groups,
    tup: torch.Tensor,
    top_a: torch.Tensor,
    a0: int,
    a1: int,
    distinct: bool,
    dst: dict[str, torch.Tensor],
    x_dst: torch.Tensor,
    offset: int,
    unshifted: bool = False,
) -> None:
    """Wick values of the inputs whose group-A tuple is in [a0, a1), written from ``offset``
    (top_a [nA]: each tuple's largest token). Everything per input but the [inputs, n] passes is
    done once for the block, in enumeration order (A, j, q), on token columns broadcast from the
    tuples (no [inputs, k] array). The [inputs, n] passes run query-major: a tile is one query's
    inputs (every A and j of the block) and reads the rows of that query only, which stay in
    cache; the tiles' three reductions (and the rows' slots) are the only arrays transposed.
    ``unshifted``: every logit is within ±``UNSHIFTED_MAX``, so the tiles sum e^(L_o) and the
    block scales the sums by e^(−L_m) (one pass over [inputs, n] fewer)."""
    n, k = ix.n, ix.k
    H = len(groups)
    ia = a1 - a0
    g = ia * n  # inputs per tile: (A, j) for one query
    B = n * g
    ar = torch.arange(n, dtype=tup.dtype)
    js, qs = ar[None, :, None], ar[None, None, :]  # [A, j, q] broadcasting
    shape = (ia, n, n)
    tb = tup[a0:a1]
    cols = [tb[:, i, None, None].expand(shape).reshape(B) for i in range(k - 2)]
    cols += [js.expand(shape).reshape(B), qs.expand(shape).reshape(B)]
    m = torch.maximum(torch.maximum(top_a[a0:a1, None, None], js), qs).reshape(B)
    row, base = assign_columns(ix, cols, m)
    rc = row.clamp(min=0)
    slot = tp.slot.index_select(0, rc).view(g, n).T.contiguous()  # [q, (A, j)]
    red = Reductions(H, B)
    out = None
    if not distinct:  # the block's outputs are a contiguous slice: computed in place
        out = {name: v[offset : offset + B] for name, v in dst.items() if name not in ("correct", "stratum")}
        red.correct = dst["correct"][offset : offset + B]
    # per input and head: A's share of attention λ, log D, and the max's logit (the same lerp)
    iA = ((torch.arange(a0, a1)[:, None, None] * n + qs) * n).expand(shape).reshape(B)
    iB = ((js * n + qs) * n).expand(shape).reshape(B)
    lams = []
    for h, (MA, lseA, MB, lseB) in enumerate(groups):
        la = lseA[a0:a1, None, :]  # [A, 1, q]
        lb = lseB[None]  # [1, j, q]
        lams.append(torch.sigmoid(la - lb).reshape(B))
        torch.logaddexp(la, lb, out=red.logD[h].view(shape))
        torch.lerp(MB.view(-1).index_select(0, iB + m), MA.view(-1).index_select(0, iA + m), lams[h], out=red.Am[h])
    Lm = red.Am.sum(0) if H > 1 else red.Am[0]
    rho = torch.exp(red.logD - tp.scal[ELL : ELL + H].index_select(1, rc)) if H > 1 else None
    A = torch.empty((H, g, n), dtype=torch.float64)
    buf = Buffers(H, g, n)
    tiles = Reductions(H, B)  # the tiles' reductions, query-major
    lam_q = [lam.view(ia, n, n).permute(2, 0, 1).contiguous() for lam in lams]  # [q, A, j]
    Lm_q = None if unshifted else Lm.view(g, n).T.contiguous()
    for q in range(n):
        for h, (MA, _, MB, _) in enumerate(groups):
            torch.lerp(MB[None, :, q], MA[a0:a1, q, None], lam_q[h][q, :, :, None], out=A[h].view(ia, n, n))
        rho_q = None if rho is None else rho.view(H, g, n)[:, :, q]
        Lm_t = None if Lm_q is None else Lm_q[q, :, None]
        reduce_wires(tp, A, slot[q], Lm_t, rho_q, tiles, q * g, buf)
    for name in ("pv", "c", "S"):  # to enumeration order
        v = getattr(tiles, name)
        getattr(red, name).copy_(v.view(*v.shape[:-1], n, g).transpose(-1, -2).reshape(v.shape))
    if unshifted:
        red.S.mul_(torch.neg(Lm).exp_())

    def logits_of(idx):
        L = 0.0
        for h, (MA, _, MB, _) in enumerate(groups):
            rb, ra = MB.view(-1, n).index_select(0, iB[idx] // n), MA.view(-1, n).index_select(0, iA[idx] // n)
            L = L + torch.lerp(rb, ra, lams[h][idx, None])
        return L

    fix_correct(red, m, logits_of)
    res = combine(tp, red, row, base, m, out)
    res["stratum"] = row
    if not distinct:
        dst["stratum"][offset : offset + B].copy_(row)
        xv = x_dst[offset : offset + B].view(ia, n, n, k)  # [A, j, q, position]
        for i in range(k - 2):
            xv[..., i] = tb[:, i, None, None]
        xv[..., k - 2] = js
        xv[..., k - 1] = qs
        return
    keep = torch.ones(B, dtype=torch.bool)
    for i in range(k):
        for j in range(i + 1, k):
            keep &= cols[i] != cols[j]
    pick = torch.nonzero(keep).squeeze(1)  # the block's inputs of k distinct tokens
    c = pick.numel()
    for name, v in res.items():
        dst[name][offset : offset + c] = v.index_select(0, pick)
    for i in range(k):
        x_dst[offset : offset + c, i] = cols[i].index_select(0, pick)


def exhaustive_values(
    tt: TorchTables,
    tp: TorchPieces,
    ix: RowIndex,
    distinct: bool,
    out: dict[str, np.ndarray],
    inputs: np.ndarray,
    counter: FlopCounter,
) -> None:
    """Fill ``out`` (the value arrays [N]) and ``inputs`` [N, k] for every input in enumeration
    order (``distinct``: only inputs of k distinct tokens); FLOPs added to ``counter``. k ≥ 3.
    Cost O(N·h·n) plus the group tables. Blocks are shared among ``torch.get_num_threads()``
    worker threads, each running torch in one thread (as ``exact`` does; each block writes its
    own slice). Splitting every operation between cores instead (intra-op threads) was 1.7×
    one core on an idle machine but collapses on a busy one, its threads waiting for each other
    at every operation: measured with the load average at 9 on 2 cores, 230 s for every 64⁴
    input against 16 s with worker threads (docs/wick.md)."""
    n, k = ix.n, ix.k
    groups, tup = _groups(tt, n, k)
    nA = tup.shape[0]
    ix32 = narrow(ix)
    if ix32 is not None:  # token columns, maxima and rows in int32: half the bytes to move
        ix, tup = ix32, tup.to(torch.int32)
    top_a = tup.amax(1)
    per_a = n * n
    if distinct:
        srt = tup.sort(1).values
        okA = (srt[:, 1:] != srt[:, :-1]).all(1) if k > 3 else torch.ones(nA, dtype=torch.bool)
        per_a = (n - k + 2) * (n - k + 1)
        start = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(okA.long(), 0)]) * per_a
    else:
        start = torch.arange(nA + 1) * per_a
    ia = max(1, -(-_TILE // (n * n)))  # group-A rows per block (a tile: ia·n inputs of n logits)
    dst = {name: torch.from_numpy(v) for name, v in out.items()}
    x_dst = torch.from_numpy(inputs)
    H = len(groups)
    counter.add(H * n * nA * (2 * (k - 2) * n + 4 * (k - 2)) + H * n * n * (6 * n + 8), "wick_group_tables")
    spans = [(a0, min(nA, a0 + ia)) for a0 in range(0, nA, ia)]

    unshifted = _unshifted(groups)

    def run(span: tuple[int, int]) -> None:
        with torch.inference_mode():
            _block(tp, ix, groups, tup, top_a, span[0], span[1], distinct, dst, x_dst, int(start[span[0]]), unshifted)

    if torch.get_num_threads() > 1 and len(spans) > 1:
        with single_threaded() as workers, ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(run, spans):
                pass
    else:
        for span in spans:
            run(span)
    counter.add(nA * n * n * flops_per_input(H, n, k, forward=False), "wick_values")
