"""The exhaustive Wick kernel's shortcuts against the plain ways: softmax sums without the max's
shift where every logit is bounded (and with it where not), and rows found in int32."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maxk.circuits import CircuitTables, circuit_tables
from maxk.distributions import get_distribution
from maxk.wick_propagation import exhaustive, wick
from maxk.wick_propagation.formula import TorchTables
from maxk.wick_propagation.rows import RowIndex, assign, assign_columns, narrow

from .helpers import max_like_model, random_model

FIELDS = ("wick", "wick_first", "soft", "constant", "first", "second")


def _loud(tab: CircuitTables, factor: float) -> CircuitTables:
    """The same attention, every logit (direct path and values) multiplied by ``factor``."""
    return dataclasses.replace(tab, evou=tab.evou * factor, pvou=tab.pvou * factor, eupu=tab.eupu * factor)


def _agree(w, v) -> None:
    for name in FIELDS:
        assert np.allclose(v[name], getattr(w, name), rtol=1e-12, atol=1e-13), name
    assert np.array_equal(v["correct"], w.correct) and np.array_equal(v["stratum"], w.stratum)


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_unshifted_sums_equal_the_shifted_ones(dist, monkeypatch):
    tab = circuit_tables(max_like_model(9, 4, seed=3, noise=0.3))
    groups, _ = exhaustive._groups(TorchTables.of(tab), tab.n, tab.k)
    assert exhaustive._unshifted(groups)
    w = wick(tab, dist)  # Σ e^(L_o), scaled by e^(−L_m)
    monkeypatch.setattr(exhaustive, "UNSHIFTED_MAX", 0.0)
    shifted = wick(tab, dist)  # Σ e^(L_o − L_m)
    for name in FIELDS:
        assert np.allclose(getattr(w, name), getattr(shifted, name), rtol=1e-13, atol=1e-15), name
    assert np.array_equal(w.correct, shifted.correct)
    _agree(w, w.explanation.values(w.inputs))


@pytest.mark.parametrize("heads", [1, 2])
def test_large_logits_take_the_shifted_path(heads):
    """Logits of several hundred (e^L would overflow): the kernel subtracts the max's logit, and
    still equals the generic per-input path; nothing is infinite or undefined."""
    base = circuit_tables(random_model(n=7, k=4, heads=heads, seed=5))
    tab = _loud(base, 400.0 / max(np.abs(base.evou).max(), np.abs(base.eupu).max()))
    groups, _ = exhaustive._groups(TorchTables.of(tab), tab.n, tab.k)
    assert not exhaustive._unshifted(groups)
    w = wick(tab, "uniform")
    assert np.isfinite(w.soft).all() and np.isfinite(w.wick).all()
    assert (w.soft < 1e-100).any()  # some inputs put all their mass elsewhere
    _agree(w, w.explanation.values(w.inputs))


def test_narrow_rows_equal_the_wide_ones():
    tab = circuit_tables(max_like_model(10, 4, seed=0, noise=0.3))
    for dist in ("uniform", "distinct"):
        ix = RowIndex.of(wick(tab, dist, inputs=np.zeros((1, 4), dtype=np.int64)).explanation.rows)
        ix32 = narrow(ix)
        assert ix32 is not None and ix32.rank.dtype == torch.int32
        x = torch.from_numpy(get_distribution("uniform").enumerate(tab.n, tab.k).astype(np.int64))
        row, base = assign(ix, x)
        cols = [c.to(torch.int32).contiguous() for c in x.T]
        r32, b32 = assign_columns(ix32, cols, x.amax(1).to(torch.int32))
        assert r32.dtype == torch.int32
        assert torch.equal(row, r32.long()) and torch.equal(base, b32.long())
        assert narrow(dataclasses.replace(ix, lookup=None)) is None  # keys searched: stays int64
