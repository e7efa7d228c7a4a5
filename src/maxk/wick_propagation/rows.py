"""The explanation's strata, as rows, and which row every input belongs to.

The rows are the cumulant estimator's sub-strata, every one a row (its "generic" heavy path):
the strata by (max m, query q, free positions holding m) of ``Distribution.fixed_max_strata``,
split on their heavy tokens by ``strata._refine`` into "no heavy token drawn" and "heavy token of
rank j at position J is the heaviest drawn" sub-strata. A row's inputs are its fixed tokens (the
query, the max's copies, the fixed heavy token) with every other position drawn from the row's
population ([0, m) minus ``removed``).

``assign`` finds an input's row from its tokens alone: its base stratum by the key
(m·n + q)·2^(k−1) + P (P the bit set of free positions holding m), then the heaviest heavy token
among its random positions. Two kinds of inputs have no row (``row`` −1): under ``uniform``, those
holding two or more copies of their heaviest heavy token (the heavy split spreads their mass over
the stratum's sub-strata), and, for k − 1 > 8, those with more than ``max_copies`` copies of the
max among the free positions (no base stratum; the weights are renormalised within each max).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..distributions import Distribution
from ..estimators.cumulant.heavy import _split_heavy
from ..estimators.cumulant.populations import _Tables
from ..estimators.cumulant.strata import _refine, _strata
from ..flops import FlopCounter

_DENSE_KEYS = 1 << 24  # base strata looked up in a dense table when n²·2^(k−1) is at most this


@dataclass(frozen=True)
class Rows:
    """The rows (sub-strata) of an explanation and the tables ``assign`` reads.

    st: the rows' arrays as ``strata._refine`` makes them (m, q [S]; fixm, rest [S, k]; size,
    weight, gamma [S]; removed [S, R]), passed as they are to the estimator's moment code;
    fixh_tok, fixh_pos [S]: the heavy token a row fixes and its position (−1: none);
    order [S]: the propagation order the estimator uses in the row (1 or 2);
    base [S]: each row's base stratum; base_m [B]: the max of each base stratum;
    keys [B]: the sorted base keys (``lookup`` maps a key to its base, or None to search keys);
    rank [B, n] int16: rank of token t among its base's heavy tokens (1 = heaviest, 0 = not heavy);
    none_row [B], heavy_row [B, max_heavy, k]: the rows of each base (−1 = none);
    dropped: the probability mass of the base strata not enumerated (``max_copies``)."""

    n: int
    k: int
    st: dict
    fixh_tok: np.ndarray
    fixh_pos: np.ndarray
    order: np.ndarray
    base: np.ndarray
    base_m: np.ndarray
    keys: np.ndarray
    key_base: np.ndarray
    lookup: np.ndarray | None
    rank: np.ndarray
    none_row: np.ndarray
    heavy_row: np.ndarray
    dropped: float

    @property
    def n_rows(self) -> int:
        """Number of rows S."""
        return len(self.order)

    @property
    def n_bases(self) -> int:
        """Number of base strata B."""
        return len(self.base_m)


def _keys(m: np.ndarray, q: np.ndarray, pbits: np.ndarray, n: int, k: int) -> np.ndarray:
    """Base keys (m·n + q)·2^(k−1) + P, int64."""
    return (m.astype(np.int64) * n + q) * (np.int64(1) << (k - 1)) + pbits


def _fix_bits(fixm: np.ndarray, k: int) -> np.ndarray:
    """Bit sets [S] int64 of the free positions holding the max, from fixm [S, k] (0/1)."""
    return (fixm[:, : k - 1] > 0).astype(np.int64) @ (np.int64(1) << np.arange(k - 1, dtype=np.int64))


def build_rows(
    T: _Tables,
    dist: Distribution,
    *,
    order: int,
    tau: float,
    max_heavy: int,
    heavy_order: int,
    prune_mass: float,
    max_copies: int | None,
    counter: FlopCounter,
) -> Rows:
    """The explanation's rows: the cumulant estimator's sub-strata with the same options (its
    generic heavy path: every sub-stratum a row), with the tables that map an input to its row.
    Cost that of ``strata._refine`` twice (once more for the heavy-token table),
    O(strata·h·n·log n), plus O(strata·(n + max_heavy·k)) for the tables."""
    n, k = T.n, T.k
    st, dropped = _strata(n, k, dist, max_copies)
    rows, parts, _ = _split_heavy(
        T,
        st,
        dist,
        order=order,
        tau=tau,
        max_heavy=max_heavy,
        heavy_order=heavy_order,
        prune_mass=prune_mass,
        heavy_path="generic",
        counter=counter,
    )
    S, B = len(rows["m"]), len(st["m"])
    fixh_tok = rows["fixh_tok"] if "fixh_tok" in rows else np.full(S, -1)
    fixh_pos = rows["fixh_pos"] if "fixh_pos" in rows else np.zeros(S, dtype=np.int64)
    row_order = np.empty(S, dtype=np.int8)
    for idx, o in parts:
        row_order[idx] = o
    bkeys = _keys(st["m"], st["q"], _fix_bits(st["fixm"], k), n, k)
    srt = np.argsort(bkeys, kind="stable")
    keys, key_base = bkeys[srt], srt
    rkeys = _keys(rows["m"], rows["q"], _fix_bits(rows["fixm"], k), n, k)
    base = key_base[np.searchsorted(keys, rkeys)]
    lookup = None
    if n * n << (k - 1) <= _DENSE_KEYS:
        lookup = np.full(n * n << (k - 1), -1, dtype=np.int32)
        lookup[bkeys] = np.arange(B, dtype=np.int32)
    # heavy tokens of every base stratum, heaviest first (the same table _refine split on)
    MH = min(max_heavy, n)
    heavy = np.full((B, MH), -1, dtype=np.int64)
    if max_heavy > 0:
        _, aux = _refine(T, st, dist, tau, max_heavy, counter, heavy_rows=False, prune_mass=prune_mass)
        heavy = aux["heavy"]
    none_row = np.full(B, -1, dtype=np.int64)
    hv = fixh_tok >= 0
    none_row[base[~hv]] = np.nonzero(~hv)[0]
    # a base whose every input repeats its heaviest token was kept unsplit (its "none" row then
    # removes no heavy token): it has no heavy ranks
    R0 = st["removed"].shape[1]
    unsplit = np.zeros(B, dtype=bool)
    has_none = none_row >= 0
    unsplit[has_none] = (rows["removed"][none_row[has_none], R0:] < 0).all(axis=1)
    heavy = np.where(unsplit[:, None], -1, heavy)
    rank = np.zeros((B, n), dtype=np.int16)
    b_, j_ = np.nonzero(heavy >= 0)
    rank[b_, heavy[b_, j_]] = j_ + 1
    heavy_row = np.full((B, max(MH, 1), k), -1, dtype=np.int64)
    r_ = np.nonzero(hv)[0]
    if len(r_):
        jr = rank[base[r_], fixh_tok[r_]].astype(np.int64)
        heavy_row[base[r_], jr - 1, fixh_pos[r_]] = r_
    counter.add(S * (k + 4) + B * (n + MH), "wick_rows")
    return Rows(
        n=n,
        k=k,
        st=rows,
        fixh_tok=fixh_tok,
        fixh_pos=fixh_pos,
        order=row_order,
        base=base,
        base_m=st["m"].astype(np.int64),
        keys=keys,
        key_base=key_base,
        lookup=lookup,
        rank=rank,
        none_row=none_row,
        heavy_row=heavy_row,
        dropped=dropped,
    )


@dataclass(frozen=True)
class RowIndex:
    """The tables of ``Rows`` that ``assign`` reads, as torch tensors (int64; ``rank`` flattened,
    with max_heavy + 1 for tokens that are not heavy)."""

    n: int
    k: int
    lookup: torch.Tensor | None
    keys: torch.Tensor
    key_base: torch.Tensor
    rank: torch.Tensor
    none_row: torch.Tensor
    heavy_row: torch.Tensor

    @staticmethod
    def of(rows: Rows) -> RowIndex:
        """The index of ``rows``."""
        t = torch.as_tensor
        return RowIndex(
            n=rows.n,
            k=rows.k,
            lookup=None if rows.lookup is None else t(rows.lookup.astype(np.int64)),
            keys=t(rows.keys),
            key_base=t(rows.key_base),
            rank=t(np.where(rows.rank > 0, rows.rank, rows.heavy_row.shape[1] + 1).astype(np.int64)).view(-1),
            none_row=t(rows.none_row),
            heavy_row=t(rows.heavy_row).view(-1),
        )


def narrow(ix: RowIndex) -> RowIndex | None:
    """``ix`` with int32 tables, when base strata are looked up in the dense table and every
    index ``assign_columns`` forms fits in int32 (then, given int32 token columns, its results
    are int32 and its passes move half the bytes); else None."""
    fits = ix.lookup is not None and max(len(ix.none_row) * ix.n, ix.heavy_row.numel(), ix.lookup.numel()) < 2**31
    if not fits:
        return None
    i32 = torch.int32
    assert ix.lookup is not None
    return replace(
        ix,
        lookup=ix.lookup.to(i32),
        rank=ix.rank.to(i32),
        none_row=ix.none_row.to(i32),
        heavy_row=ix.heavy_row.to(i32),
    )


def assign(ix: RowIndex, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The row of every input x [N, k] (int64 torch): (row [N], −1 = no row; base [N], the base
    stratum, −1 = none), int64. An input without a row but with a base holds two or more copies of
    its heaviest heavy token (``uniform``); one without a base has more than ``max_copies``
    copies of its max. Cost O(N·k) integer operations and gathers (column by column: reductions
    over a short last axis are slow in torch)."""
    return assign_columns(ix, list(x.T.contiguous()))


def assign_columns(
    ix: RowIndex, cols: list[torch.Tensor], m: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``assign`` of the inputs whose tokens at position i are cols[i] [N] (int64, contiguous;
    or int32 with a ``narrow`` index, and then (row, base) are int32), given their maxima m [N]
    when known. Cost O(N·k) integer operations and gathers."""
    n, k = ix.n, ix.k
    if m is None:
        m = cols[0].clone()
        for c in cols[1:]:
            torch.maximum(m, c, out=m)
    q = cols[k - 1]
    at_m = [c == m for c in cols[: k - 1]]
    key = torch.mul(m, n << (k - 1)).add_(q, alpha=1 << (k - 1))
    for i, a in enumerate(at_m):
        key.add_(a, alpha=1 << i)
    if ix.lookup is not None:
        base = ix.lookup.index_select(0, key)
    else:
        pos = torch.searchsorted(ix.keys, key).clamp_(max=len(ix.keys) - 1)
        base = torch.where(ix.keys[pos] == key, ix.key_base[pos], -1)
    bc = base.clamp(min=0)
    if k == 1:  # no free position: every input is its stratum's one input
        return torch.where(base >= 0, ix.none_row.index_select(0, bc), -1), base
    bn = bc * n
    MH1 = ix.heavy_row.numel() // (len(ix.none_row) * k)
    none = MH1 + 1  # rank of a token that is not heavy (or a position holding the max)
    rk = [ix.rank.index_select(0, bn + c).masked_fill_(a, none) for c, a in zip(cols[: k - 1], at_m, strict=True)]
    top = rk[0].clone()
    for r in rk[1:]:
        torch.minimum(top, r, out=top)
    cnt = torch.zeros_like(top)
    J = torch.full_like(top, k - 1)
    for i in range(k - 2, -1, -1):  # the first position holding the top rank
        hit = rk[i] == top
        cnt += hit
        J.masked_fill_(hit, i)
    heavy = top < none
    hr = ix.heavy_row.index_select(0, (bc * MH1 + (top - 1).clamp_(0, MH1 - 1)) * k + J)
    row = torch.where(heavy, torch.where(cnt == 1, hr, -1), ix.none_row.index_select(0, bc))
    return torch.where(base >= 0, row, -1), base
