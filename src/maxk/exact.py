"""Exact evaluation over every input of a distribution (DESIGN §4).

``evaluate`` walks all n^k inputs through the circuit tables. For each query token q it builds the
attention weights w[i, t] = exp(score - score_q) and weighted values w·(EVOU + PVOU + EUPU) once,
sums them over the trailing positions in one table and over the leading positions in batches, so an
input costs O(h·n) additions, one division per logit and n exponentials, with no matrix product.
``evaluate_forward`` is the straightforward way: the model's forward pass on every input, in batches.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from .circuits import CircuitTables, circuit_tables
from .distributions import check_distribution, n_sequences
from .errors import MaxkError
from .results import EvalResult

EXHAUSTIVE_LIMIT = 4 * 10**9  # sequences; beyond this, use sampling
_CHUNK_ELEMS = 1 << 21  # logits per batch: bounded memory whatever n and k


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


def _group_tables(eqke, eqkp, evou, pvou, eupu, q: int, toks: torch.Tensor, positions: list[int]):
    """For token groups toks [g, p] at ``positions`` (query token q): per head the attention-
    weighted mean of their values [h, g, n_out] (direct path folded into head 0) and the
    log-sum-exp of their scores [h, g]. Float64; a group of no positions has weight 0."""
    H, n = eqke.shape[0], eupu.shape[1]
    g = toks.shape[0]
    if not positions:
        mean = torch.zeros(H, g, n, dtype=torch.float64)
        mean[0] += eupu[q]
        return mean, torch.full((H, g), float("-inf"), dtype=torch.float64)
    pos = torch.as_tensor(positions)
    score = eqke[:, q, :][:, toks] + eqkp[:, q, pos][:, None, :]  # [h, g, p]
    lse = torch.logsumexp(score, dim=-1)
    att = torch.exp(score - lse[..., None])
    vals = evou[:, toks, :] + pvou[:, pos, :][:, None, :, :]  # [h, g, p, n_out]
    mean = torch.einsum("hgp,hgpn->hgn", att, vals)
    mean[0] += eupu[q]
    return mean, lse


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


def evaluate(
    model_or_tables,
    dist: str = "uniform",
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Exact accuracy, soft accuracy and mean loss over every input of ``dist``.

    Cost: O(n^(k+1)·h) additions and n^(k+1) exponentials; memory O(2^21) floats at a time.
    ``dtype`` defaults to float64 for small problems (n^(k+1) <= 2^24) and float32 otherwise.
    ``progress(done, total)`` is called after each query token.
    """
    t0 = time.perf_counter()
    tab = _as_tables(model_or_tables)
    n, k, H = tab.n, tab.k, tab.n_heads
    check_distribution(dist, n, k)
    N = n_sequences(dist, n, k)
    if n**k > EXHAUSTIVE_LIMIT:
        raise MaxkError(
            f"exhaustive evaluation needs {n**k:.3g} inputs (limit {EXHAUSTIVE_LIMIT:.0e}); "
            "use sampling instead (--samples N)"
        )
    if dtype is None:
        dtype = torch.float64 if n ** (k + 1) <= 1 << 24 else torch.float32
    dev = torch.device(device) if device is not None else torch.device("cpu")
    f = k - 1  # free positions 0..k-2; the query sits at k-1
    r = 0  # trailing free positions summed into one table
    while r < f and n ** (r + 1) * n <= _CHUNK_ELEMS:
        r += 1
    n_inner, n_outer = n**r, n ** (f - r)
    batch = max(1, _CHUNK_ELEMS // (n_inner * n))
    inner_tok = _unravel(np.arange(n_inner), n, r)  # [n_inner, r]
    inner_max = torch.as_tensor(inner_tok.max(axis=1) if r else np.full(1, -1), device=dev)
    if dist == "distinct":
        inner_ok = torch.as_tensor(
            np.array([len(set(row)) == r for row in inner_tok]) if r else np.ones(1, bool), device=dev
        )
        inner_onehot = torch.zeros(n_inner, n, dtype=torch.bool, device=dev)
        if r:
            inner_onehot[torch.arange(n_inner)[:, None], torch.as_tensor(inner_tok)] = True
    correct, soft_sum, loss_sum = 0, 0.0, 0.0
    eqke, eqkp = torch.as_tensor(tab.eqke), torch.as_tensor(tab.eqkp)
    evou, pvou, eupu = torch.as_tensor(tab.evou), torch.as_tensor(tab.pvou), torch.as_tensor(tab.eupu)
    pos_outer = list(range(f - r)) + [f]  # leading free positions, then the query
    pos_inner = list(range(f - r, f))
    inner_t = torch.as_tensor(inner_tok)
    for q in range(n):
        # trailing r positions as one table: per head the attention-weighted mean of their values
        # (direct path folded into head 0) and the log of their total attention weight.
        in_mean, in_lse = _group_tables(eqke, eqkp, evou, pvou, eupu, q, inner_t, pos_inner)
        in_mean, in_lse = in_mean.to(dev, dtype), in_lse.to(dev)
        for start in range(0, n_outer, batch):
            stop = min(start + batch, n_outer)
            otok = np.c_[_unravel(np.arange(start, stop), n, f - r), np.full(stop - start, q)]
            out_mean, out_lse = _group_tables(eqke, eqkp, evou, pvou, eupu, q, torch.as_tensor(otok), pos_outer)
            out_mean, out_lse = out_mean.to(dev, dtype), out_lse.to(dev)
            # logits = inner mean + lam * (outer mean - inner mean), lam = outer share of attention
            logits = None
            for h in range(H):
                lam = torch.sigmoid(out_lse[h, :, None] - in_lse[h, None, :]).to(dtype).unsqueeze(-1)
                term = torch.lerp(in_mean[h, None, :, :], out_mean[h, :, None, :], lam)
                logits = term if logits is None else logits.add_(term)
            omax = torch.as_tensor(otok.max(axis=1), device=dev)
            label = torch.maximum(omax[:, None], inner_max[None, :])
            valid = None
            if dist == "distinct":
                o_ok = np.array([len(set(row)) == f - r + 1 for row in otok])
                o_hot = torch.zeros(stop - start, n, dtype=torch.bool, device=dev)
                o_hot[torch.arange(stop - start)[:, None], torch.as_tensor(otok)] = True
                clash = (o_hot.to(torch.float32) @ inner_onehot.T.to(torch.float32)) > 0
                valid = torch.as_tensor(o_ok, device=dev)[:, None] & inner_ok[None, :] & ~clash
            c, s, l_ = _accumulate(logits, label, valid)
            correct += c
            soft_sum += s
            loss_sum += l_
        if progress is not None:
            progress(q + 1, n)
    return EvalResult(
        dist=dist,
        method="exhaustive",
        n_sequences=N,
        correct=correct,
        accuracy=correct / N,
        soft_accuracy=soft_sum / N,
        loss=loss_sum / N,
        seconds=time.perf_counter() - t0,
    )


def all_sequences(n: int, k: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Sequences number start..stop-1 of all n^k, in lexicographic order: [stop-start, k] int64."""
    stop = n**k if stop is None else stop
    return _unravel(np.arange(start, stop, dtype=np.int64), n, k)


@torch.no_grad()
def evaluate_forward(model, dist: str = "uniform", *, batch: int = 1 << 16, dtype=torch.float32) -> EvalResult:
    """The straightforward way: the model's forward pass on every input, in batches.

    Cost: n^k forward passes, O(n^k·(k·d·(d + n) + k²·d)). Used as the reference and the baseline.
    """
    t0 = time.perf_counter()
    n, k = model.cfg.n, model.cfg.k
    check_distribution(dist, n, k)
    N = n_sequences(dist, n, k)
    m = copy.deepcopy(model).to(dtype)
    correct, soft_sum, loss_sum = 0, 0.0, 0.0
    for start in range(0, n**k, batch):
        toks_np = all_sequences(n, k, start, min(start + batch, n**k))
        toks = torch.as_tensor(toks_np)
        logits = m.last_logits(toks)
        label = toks.max(dim=1).values
        valid = None
        if dist == "distinct":
            srt = np.sort(toks_np, axis=1)
            valid = torch.as_tensor((np.diff(srt, axis=1) != 0).all(axis=1))
        c, s, l_ = _accumulate(logits.clone(), label, valid)
        correct += c
        soft_sum += s
        loss_sum += l_
    return EvalResult(dist, "forward", N, correct, correct / N, soft_sum / N, loss_sum / N, time.perf_counter() - t0)
