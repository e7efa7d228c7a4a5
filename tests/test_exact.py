"""Exact evaluation (``maxk.exact.evaluate``) against the plain forward pass on every input."""

import math

import numpy as np
import pytest
import torch

import maxk
from maxk import exact
from maxk.circuits import circuit_tables
from maxk.errors import MaxkError
from maxk.exact import evaluate, evaluate_forward

from .helpers import random_model


def _assert_same(res, ref, rel=1e-9):
    assert res.n_sequences == ref.n_sequences
    assert res.correct == ref.correct
    assert res.accuracy == ref.accuracy
    assert res.soft_accuracy == pytest.approx(ref.soft_accuracy, rel=rel, abs=1e-12)
    assert res.loss == pytest.approx(ref.loss, rel=rel, abs=1e-12)


CASES = [  # n, k, heads, biases
    (8, 3, 1, True),
    (8, 3, 2, False),
    (7, 4, 3, True),
    (6, 2, 2, True),
    (5, 1, 2, True),
    (9, 5, 1, True),
]


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
@pytest.mark.parametrize("n,k,heads,biases", CASES)
def test_equals_forward_pass(n, k, heads, biases, dist):
    m = random_model(n=n, k=k, heads=heads, biases=biases, seed=n + 10 * k + heads, scale=1.0)
    ref = evaluate_forward(m, dist, dtype=torch.float64)
    _assert_same(evaluate(m, dist), ref)
    # float32 logits: same counts on these well-separated random models, figures to ~1e-6
    _assert_same(evaluate(m, dist, dtype=torch.float32), ref, rel=1e-5)


@pytest.mark.parametrize("threads,band_share", [(1, 2.0), (2, -1.0), (2, 0.02)])
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_small_buffers_and_threads(monkeypatch, threads, band_share, dist):
    """Tiles of a piece of a row, blocks of a few inputs, group tables built on demand, worker
    threads, correctness from z with direct checks (band_share 2) or from the row maxima after
    the first block (-1): the same counts as with the defaults."""
    m = random_model(n=7, k=4, heads=2, seed=3, scale=1.0)
    ref = evaluate_forward(m, dist, dtype=torch.float64)
    monkeypatch.setattr(exact, "_TILE_BYTES", 3 * 7 * 8)  # 3 inputs per tile (float64)
    monkeypatch.setattr(exact, "_ROWS", 10)
    monkeypatch.setattr(exact, "_GROUP_ELEMS", 2 * 7 * 5)  # 5 rows of a group at a time
    monkeypatch.setattr(exact, "_BAND_SHARE", band_share)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = evaluate(m, dist)
        assert torch.get_num_threads() == threads  # restored after the worker threads ran
    finally:
        torch.set_num_threads(before)
    _assert_same(res, ref)


@pytest.mark.parametrize("band_share", [2.0, -1.0])
def test_whole_rows_per_tile_with_ragged_end(monkeypatch, band_share):
    m = random_model(n=6, k=4, heads=1, seed=5, scale=1.0)
    ref = evaluate_forward(m, "uniform", dtype=torch.float64)
    monkeypatch.setattr(exact, "_TILE_BYTES", 4 * 6 * 6 * 8)  # 4 rows of A (6 inputs each)
    monkeypatch.setattr(exact, "_ROWS", 5 * 6)  # blocks of 5 rows: tiles of 4 and of 1 row
    monkeypatch.setattr(exact, "_BAND_SHARE", band_share)
    _assert_same(evaluate(m), ref)
    _assert_same(evaluate(m, dtype=torch.float32), ref, rel=1e-5)


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_sharp_attention(dist):
    """Attention scores hundreds apart (as in trained models): still exact."""
    m = random_model(n=8, k=4, heads=2, seed=7, scale=1.0)
    with torch.no_grad():
        m.blocks[0].attn.W_Q.mul_(60.0)
    tab = circuit_tables(m)
    spread = (tab.eqke.max(axis=2) - tab.eqke.min(axis=2)).max()
    assert spread > 300
    ref = evaluate_forward(m, dist, dtype=torch.float64)
    _assert_same(evaluate(m, dist), ref)
    _assert_same(evaluate(m, dist, dtype=torch.float32), ref, rel=1e-5)


def test_ties_are_not_correct():
    """A model whose logits are all equal gets nothing right (the max must be strictly larger)."""
    m = random_model(n=5, k=3, seed=1)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    res = evaluate(m)
    assert res.correct == 0
    assert res.soft_accuracy == pytest.approx(1 / 5, rel=1e-12)
    assert res.loss == pytest.approx(math.log(5), rel=1e-12)


def _near_tie(model, sign: int, which: int):
    """Shift b_U so that the input with the ``which``-th smallest positive margin has margin
    about sign·3e-9 of its logit's size: below float32's resolution, either side of the tie."""
    n, k = model.cfg.n, model.cfg.k
    xs = exact.all_sequences(n, k)
    lg = circuit_tables(model).logits(xs)
    mx, rows = xs.max(1), np.arange(len(xs))
    lm = lg[rows, mx].copy()
    lg[rows, mx] = -np.inf
    marg, rival = lm - lg.max(1), lg.argmax(1)
    pos = np.nonzero(marg > 0)[0]
    i = pos[np.argsort(marg[pos])[which]]
    with torch.no_grad():
        model.unembed.b_U[rival[i]] += float(marg[i] - sign * 3e-9 * (abs(lm[i]) + 1))
    return model


@pytest.mark.parametrize("band_share", [1.0, 0.0])  # the band check, and the largest-logit pass
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_float32_counts_near_ties_as_float64_does(monkeypatch, band_share, dist):
    """Inputs tied to within float32 rounding are decided in float64: the float32 evaluation's
    count equals the float64 one on every one of these near-tie models (before the recheck the
    float32 count was off on 34 of 48 such models; a recipe-trained seed at n = 64, k = 4 had
    one input of 1.7e7 misjudged, which brute force then certified)."""
    monkeypatch.setattr(exact, "_BAND_SHARE", band_share)
    for seed in range(6):
        for sign in (1, -1):
            m = _near_tie(random_model(n=10, k=4, d_model=8, d_head=8, seed=seed, scale=1.5), sign, seed % 3)
            ref = evaluate(m, dist, dtype=torch.float64)
            assert evaluate(m, dist, dtype=torch.float32).correct == ref.correct, (seed, sign)


def test_tables_input_progress_and_device():
    m = random_model(n=6, k=3, seed=2)
    calls = []
    res = evaluate(circuit_tables(m), "distinct", device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(q + 1, 6) for q in range(6)]
    _assert_same(res, evaluate_forward(m, "distinct", dtype=torch.float64))
    assert res.method == "exhaustive" and res.seconds >= 0


def test_rejects_bad_distribution_and_huge_problems():
    m = random_model(n=4, k=2)
    with pytest.raises(MaxkError):
        evaluate(m, "gaussian")
    with pytest.raises(MaxkError):
        evaluate(random_model(n=3, k=4), "distinct")
    big = random_model(n=4096, k=3, d_model=4, d_head=4)
    with pytest.raises(MaxkError, match="sampling"):
        evaluate(big)


@pytest.mark.slow
def test_float32_matches_float64_on_trained_model():
    """The shipped trained model (n=64, k=4, very sharp attention): float32 logits give the same
    accuracy (to within a couple of near-ties) and the same soft accuracy and loss to ~1e-9."""
    m = maxk.load("default")
    tab = circuit_tables(m)
    r64 = evaluate(tab, dtype=torch.float64)
    r32 = evaluate(tab, dtype=torch.float32)
    assert abs(r32.correct - r64.correct) <= 2
    assert r32.soft_accuracy == pytest.approx(r64.soft_accuracy, rel=1e-9)
    assert r32.loss == pytest.approx(r64.loss, rel=1e-7)
    assert r64.accuracy > 0.99


def test_distinct_with_tokens_past_one_mask_word():
    """n > 63: token sets span two 63-bit words."""
    m = random_model(n=66, k=3, d_model=8, d_head=4, seed=11, scale=1.0)
    ref = evaluate_forward(m, "distinct", dtype=torch.float64)
    _assert_same(evaluate(m, "distinct", dtype=torch.float64), ref)


def test_index_memory_is_bounded_for_small_n_large_k():
    from maxk.config import ModelConfig
    from maxk.model import MaxKTransformer

    m = MaxKTransformer(ModelConfig(d_vocab=2, n_ctx=31, d_model=4, d_head=4))
    with pytest.raises(MaxkError, match="--samples"):
        evaluate(m)
