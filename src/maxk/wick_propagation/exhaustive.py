"""Wick values of every input of a distribution, in ``Distribution.enumerate`` order, with shared prefixes.

An input is (A, j, q): the tokens A at positions 0..k−3, j at k−2 and the query q. Per head and
query, group A's attention output MA[A, q] and log weight lseA[A, q] are formed once for every A
(one batched product), and group B's MB[j, q], lseB[j, q] once for every (j, q); an input's
attention output is then one stable blend

    A_h = lerp(MB[j, q], MA[A, q], σ(lseA − lseB)),   log D_h = logaddexp(lseA, lseB)

(as in ``exact``), after which ``formula`` gives its Wick values. Inputs run in blocks of A rows,
each written to its contiguous slice of the output arrays in lexicographic order (under
``distinct`` the inputs with a repeated token are computed and dropped).
Cost O(N·h·n) after O(n^k·h) for the group tables (memory n^k·h float64 numbers, ≤ 160 MB a
head for n^k ≤ 2·10^7)."""

from __future__ import annotations

import numpy as np
import torch

from ..flops import FlopCounter
from .formula import (
    ELL,
    Buffers,
    Reductions,
    TorchPieces,
    TorchTables,
    combine,
    fix_correct,
    flops_per_input,
    reduce_wires,
)
from .rows import RowIndex, assign

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


def _block(
    tp: TorchPieces,
    ix: RowIndex,
    groups,
    tup: torch.Tensor,
    a0: int,
    a1: int,
    distinct: bool,
    dst: dict[str, torch.Tensor],
    x_dst: torch.Tensor,
    offset: int,
) -> None:
    """Wick values of the inputs whose group-A tuple is in [a0, a1), written from ``offset``.
    Inside the block the inputs run query-major, (q, A, j): a tile is one query's inputs (every
    A and j of the block) and reads the rows of that query only, which stay in cache; everything
    per input but the [inputs, n] passes is done once for the block. The results are transposed
    to enumeration order, (A, j, q), when written."""
    n, k = ix.n, ix.k
    H = len(groups)
    ia = a1 - a0
    g = ia * n  # inputs per tile: (A, j) for one query
    B = n * g
    ar = torch.arange(n)
    x = torch.empty((n, ia, n, k), dtype=torch.int64)  # [q, A, j, position]
    x[..., : k - 2] = tup[a0:a1][None, :, None, :]
    x[..., k - 2] = ar[None, None, :]
    x[..., k - 1] = ar[:, None, None]
    x = x.view(B, k)
    row, base = assign(ix, x)
    m = x.amax(1)
    rc = row.clamp(min=0)
    slot = tp.slot.index_select(0, rc)
    red = Reductions(H, B)
    # per input and head: A's share of attention λ, log D, and the max's logit (the same lerp)
    iA = ((torch.arange(a0, a1)[None, :, None] * n + ar[:, None, None]) * n).expand(n, ia, n).reshape(B)
    iB = ((ar[None, None, :] * n + ar[:, None, None]) * n).expand(n, ia, n).reshape(B)
    lams = []
    for h, (MA, lseA, MB, lseB) in enumerate(groups):
        la = lseA[a0:a1].T[:, :, None]  # [q, A, 1]
        lb = lseB.T[:, None, :]  # [q, 1, j]
        lams.append(torch.sigmoid(la - lb).reshape(B))
        torch.logaddexp(la, lb, out=red.logD[h].view(n, ia, n))
        torch.lerp(MB.view(-1).index_select(0, iB + m), MA.view(-1).index_select(0, iA + m), lams[h], out=red.Am[h])
    Lm = red.Am.sum(0)[:, None] if H > 1 else red.Am[0, :, None]
    rho = torch.exp(red.logD - tp.scal[ELL : ELL + H].index_select(1, rc)) if H > 1 else None
    A = torch.empty((H, g, n), dtype=torch.float64)
    buf = Buffers(H, g, n)
    for q in range(n):
        t0, t1 = q * g, (q + 1) * g
        for h, (MA, _, MB, _) in enumerate(groups):
            lam = lams[h][t0:t1].view(ia, n, 1)
            torch.lerp(MB[None, :, q], MA[a0:a1, q, None], lam, out=A[h].view(ia, n, n))
        reduce_wires(tp, A, slot[t0:t1], Lm[t0:t1], None if rho is None else rho[:, t0:t1], red, t0, buf)

    def logits_of(idx):
        L = 0.0
        for h, (MA, _, MB, _) in enumerate(groups):
            rb, ra = MB.view(-1, n).index_select(0, iB[idx] // n), MA.view(-1, n).index_select(0, iA[idx] // n)
            L = L + torch.lerp(rb, ra, lams[h][idx, None])
        return L

    fix_correct(red, m, logits_of)
    res = combine(tp, red, row, base, m)
    res["stratum"] = row
    if not distinct:  # write transposed to (A, j, q) order
        for name, v in res.items():
            dst[name][offset : offset + B].view(g, n).copy_(v.view(n, g).T)
        x_dst[offset : offset + B].view(g, n, k).copy_(x.view(n, g, k).transpose(0, 1))
        return
    res = {name: v.view(n, g).T.reshape(B) for name, v in res.items()}
    x = x.view(n, g, k).transpose(0, 1).reshape(B, k)
    srt = x.sort(1).values
    keep = (srt[:, 1:] != srt[:, :-1]).all(1)
    c = int(keep.sum())
    for name, v in res.items():
        dst[name][offset : offset + c] = v[keep]
    x_dst[offset : offset + c] = x[keep]


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
    Cost O(N·h·n) plus the group tables. The work is split between cores inside each torch
    operation (``torch.get_num_threads()`` intra-op threads): blocks run one after the other,
    their operations on ≥ 2¹⁶ numbers at a time
    (measured on 2 cores: 1.7× faster than one core; worker threads over blocks, as in ``exact``,
    gained only 1.35×, the many short operations serialising on the interpreter lock)."""
    n, k = ix.n, ix.k
    groups, tup = _groups(tt, n, k)
    nA = tup.shape[0]
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
    with torch.inference_mode():
        for a0 in range(0, nA, ia):
            a1 = min(nA, a0 + ia)
            _block(tp, ix, groups, tup, a0, a1, distinct, dst, x_dst, int(start[a0]))
            counter.add((a1 - a0) * n * n * flops_per_input(H, n, k, forward=False), "wick_values")
