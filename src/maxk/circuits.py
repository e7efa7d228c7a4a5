"""The circuit tables (DESIGN §2): the one place the weights are turned into the tables every
analysis reads. Computed once, in float64, biases folded in."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import ModelConfig


@dataclass(frozen=True)
class CircuitTables:
    """Float64 tables of a 1-layer attention-only model (h heads, n tokens, k positions).

    For one input x (query q = x[k-1]):
        score[h, i] = eqke[h, q, x_i] + eqkp[h, q, i]
        a[h]        = softmax_i score[h]
        logits      = eupu[q] + sum_h sum_i a[h, i] * (evou[h, x_i] + pvou[h, i])

    eqke: [h, n_query, n_key]   attention score of query token q on key token t (scaled)
    eqkp: [h, n_query, k]       its positional part (b_K included)
    evou: [h, n_key, n_out]     what key token t writes to each output (b_V included)
    pvou: [h, k, n_out]         what position i writes to each output
    eupu: [n_query, n_out]      direct path (b_O and b_U included)
    """

    cfg: ModelConfig
    eqke: np.ndarray
    eqkp: np.ndarray
    evou: np.ndarray
    pvou: np.ndarray
    eupu: np.ndarray

    @property
    def n(self) -> int:
        return self.cfg.d_vocab

    @property
    def k(self) -> int:
        return self.cfg.n_ctx

    @property
    def n_heads(self) -> int:
        return self.cfg.n_heads

    def scores(self, tokens: np.ndarray) -> np.ndarray:
        """tokens: [b, k] -> attention scores [b, h, k] at the last position. Cost O(b·h·k)."""
        q = tokens[:, -1]
        h = np.arange(self.n_heads)[None, :, None]
        pos = np.arange(self.k)[None, None, :]
        return self.eqke[h, q[:, None, None], tokens[:, None, :]] + self.eqkp[h, q[:, None, None], pos]

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens: [b, k] -> last-position logits [b, n] through the tables. Cost O(b·h·k·n)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        s = self.scores(tokens)
        s = s - s.max(axis=-1, keepdims=True)
        a = np.exp(s)
        a /= a.sum(axis=-1, keepdims=True)  # [b, h, k]
        out = self.eupu[tokens[:, -1]].copy()
        for h in range(self.n_heads):
            vals = self.evou[h][tokens] + self.pvou[h][None, :, :]  # [b, k, n]
            out += np.einsum("bk,bkn->bn", a[:, h, :], vals)
        return out


def _weights64(model) -> dict[str, np.ndarray]:
    return {name: p.detach().to(device="cpu", dtype=torch.float64).numpy() for name, p in model.named_parameters()}


def circuit_tables(model) -> CircuitTables:
    """Compute the circuit tables of ``model`` in float64. Cost O(h·(n·d·dh + n²·dh + n²·d))."""
    cfg: ModelConfig = model.cfg
    w = _weights64(model)
    E, P = w["embed.W_E"], w["pos_embed.W_pos"]
    WQ, WK, WV, WO = (w[f"blocks.0.attn.W_{x}"] for x in "QKVO")
    bQ, bK, bV, bO = (w[f"blocks.0.attn.b_{x}"] for x in "QKVO")
    WU, bU = w["unembed.W_U"], w["unembed.b_U"]
    last = cfg.n_ctx - 1
    s = cfg.attn_scale
    query = np.einsum("nd,hde->hne", E + P[last], WQ) + bQ[:, None, :]  # [h, n, dh]
    key_tok = np.einsum("nd,hde->hne", E, WK)  # [h, n, dh]
    key_pos = np.einsum("kd,hde->hke", P, WK) + bK[:, None, :]  # [h, k, dh]
    eqke = s * np.einsum("hqe,hte->hqt", query, key_tok)
    eqkp = s * np.einsum("hqe,hke->hqk", query, key_pos)
    ou = np.einsum("hed,dn->hen", WO, WU)  # [h, dh, n]
    evou = np.einsum("hte,hen->htn", np.einsum("nd,hde->hne", E, WV) + bV[:, None, :], ou)
    pvou = np.einsum("hke,hen->hkn", np.einsum("kd,hde->hke", P, WV), ou)
    eupu = (E + P[last]) @ WU + bO @ WU + bU
    return CircuitTables(cfg, eqke, eqkp, evou, pvou, eupu)
