"""``explain``: the cumulant explanation of a model, built once; ``WickExplanation``: its per-input values."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..circuits import CircuitTables
from ..distributions import Distribution, resolve
from ..estimators.cumulant.driver import _check_options
from ..estimators.cumulant.populations import _Tables
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from .expansion import RowPieces, row_pieces
from .formula import TorchPieces, TorchTables, flops_per_input, values_from_wires, wires
from .rows import RowIndex, Rows, assign, build_rows
from .terms import split_terms

_INPUT_CHUNK = 4096  # inputs per chunk of ``values``

VALUE_FIELDS = ("wick", "wick_first", "soft", "correct", "stratum", "constant", "first", "second")


@dataclass(frozen=True, eq=False)
class WickExplanation:
    """The cumulant explanation of one model under one distribution, ready to give per-input
    Wick values (``values``) and their split by position (``terms``).

    estimate: the cumulant estimate with the same options (Σ_s w_s est_s over the rows);
    estimate_first: the order-1 (mean-propagation) estimate over the same rows, Σ_s w_s g(μ_s);
    rows, pieces: the rows (sub-strata) and their expansion pieces; parent / per_max: the
    (estimate, first-order estimate) of every base stratum [B] and every max [n], the values
    of inputs that no row covers; flops, seconds: what building it cost."""

    tables: CircuitTables
    dist: Distribution
    options: dict
    rows: Rows
    pieces: RowPieces
    parent: tuple[np.ndarray, np.ndarray]
    per_max: tuple[np.ndarray, np.ndarray]
    estimate: float
    estimate_first: float
    flops: int
    seconds: float
    _torch: dict = field(default_factory=dict, repr=False)

    def torch_pieces(self) -> tuple[TorchTables, TorchPieces, RowIndex]:
        """The tables, pieces and row index as torch tensors (made once, cached)."""
        if not self._torch:
            self._torch["tt"] = TorchTables.of(self.tables)
            self._torch["tp"] = TorchPieces.of(
                self.pieces, self.rows.st["m"], self.rows.st["q"], self.parent, self.per_max
            )
            self._torch["ix"] = RowIndex.of(self.rows)
        return self._torch["tt"], self._torch["tp"], self._torch["ix"]

    def values(self, inputs: np.ndarray, counter: FlopCounter | None = None) -> dict[str, np.ndarray]:
        """Per input of inputs [N, k]: ``wick`` W(x), ``wick_first`` W1(x), ``soft`` f(x) (the
        model's probability on the max), ``correct`` (its logit strictly above all others),
        ``stratum`` (row, −1 where none covers the input), ``constant`` (est_s), ``first`` and
        ``second`` (the first- and second-order Wick terms; W = constant + first + second).
        Float64 arrays [N] (correct bool, stratum int32). Cost O(N·h·k·n), a forward pass."""
        x = np.asarray(inputs)
        N = x.shape[0]
        out = {
            name: np.empty(N, dtype=bool if name == "correct" else np.int32 if name == "stratum" else np.float64)
            for name in VALUE_FIELDS
        }
        tt, tp, ix = self.torch_pieces()
        with single_threaded(), torch.inference_mode():
            for s0 in range(0, N, _INPUT_CHUNK):
                s1 = min(N, s0 + _INPUT_CHUNK)
                tok = torch.from_numpy(x[s0:s1].astype(np.int64))
                row, base = assign(ix, tok)
                A, logD = wires(tt, tok)
                res = values_from_wires(tp, A, logD, row, base, tok.amax(1))
                for name, v in res.items():
                    out[name][s0:s1] = v.numpy()
                out["stratum"][s0:s1] = row.numpy()
        if counter is not None:
            tab = self.tables
            counter.add(N * flops_per_input(tab.n_heads, tab.n, tab.k), "wick_values")
        return out

    def terms(self, inputs: np.ndarray) -> list[list[tuple[str, float]]]:
        """For a few inputs [N, k]: the first- and second-order Wick terms split by what they come
        from, largest in magnitude first (see ``terms.split_terms``). Cost O(|S|·k²·h·n) per input,
        |S| the population of the input's row."""
        return split_terms(self, np.asarray(inputs))


def _group_means(key: np.ndarray, w: np.ndarray, e: np.ndarray, e1: np.ndarray, size: int):
    """Per group: Σ w·e / Σ w and Σ w·e1 / Σ w ([size] each). A group without rows gets 0: the
    estimator leaves its inputs out (it happens for max 0 under ``uniform`` with k − 1 > 8, whose
    one input repeats the max more than ``max_copies`` times)."""
    tot = np.bincount(key, weights=w, minlength=size)
    ok = tot > 0
    den = np.where(ok, tot, 1.0)
    a = np.where(ok, np.bincount(key, weights=w * e, minlength=size) / den, 0.0)
    b = np.where(ok, np.bincount(key, weights=w * e1, minlength=size) / den, 0.0)
    return a, b


def explain(
    tables: CircuitTables,
    dist: str | Distribution = "uniform",
    *,
    counter: FlopCounter | None = None,
    readout: str = "gauss",
    order: int = 2,
    tau: float = 0.05,
    max_heavy: int = 12,
    heavy_order: int = 1,
    prune_mass: float = 1e-4,
    max_copies: int | None = None,
    heavy_path: str = "vectorised",
    ratio_correction: bool = True,
    lse_correction: bool = True,
) -> WickExplanation:
    """Build the cumulant explanation (the estimator ``cumulant`` with the same options: strata,
    heavy-token sub-strata, exact wire moments, read-out) and the per-row pieces of its Wick
    expansion (``expansion``). ``heavy_path`` is accepted for compatibility and ignored: the
    explanation needs every sub-stratum as a row (the estimator's generic path, the same value
    to rounding). FLOPs are added to ``counter``. Cost that of the estimator's generic path,
    O(h²·n³ + rows·h²·n·(n + k)), plus O(rows·h·n²) for the expansion's quadratic forms."""
    t0 = time.perf_counter()
    dist = resolve(dist, tables.n, tables.k)
    options = dict(
        readout=readout,
        order=order,
        tau=tau,
        max_heavy=max_heavy,
        heavy_order=heavy_order,
        prune_mass=prune_mass,
        max_copies=max_copies,
        ratio_correction=ratio_correction,
        lse_correction=lse_correction,
    )
    _check_options(heavy_path=heavy_path, **options)
    counter = FlopCounter() if counter is None else counter
    f0 = counter.total
    T = _Tables(tables, counter)
    rows = build_rows(
        T,
        dist,
        order=order,
        tau=tau,
        max_heavy=max_heavy,
        heavy_order=heavy_order,
        prune_mass=prune_mass,
        max_copies=max_copies,
        counter=counter,
    )
    pc = row_pieces(
        T,
        tables,
        rows,
        readout=readout,
        ratio_correction=ratio_correction,
        lse_correction=lse_correction,
        counter=counter,
    )
    wt = rows.st["weight"]
    counter.add(8 * rows.n_rows, "sum")
    estimate = float((pc.est * wt).sum())
    estimate_first = float((pc.est1 * wt).sum())
    parent = _group_means(rows.base, wt, pc.est, pc.est1, rows.n_bases)
    per_max = _group_means(rows.st["m"], wt, pc.est, pc.est1, tables.n)
    return WickExplanation(
        tables=tables,
        dist=dist,
        options=options,
        rows=rows,
        pieces=pc,
        parent=parent,
        per_max=per_max,
        estimate=estimate,
        estimate_first=estimate_first,
        flops=counter.total - f0,
        seconds=time.perf_counter() - t0,
    )
