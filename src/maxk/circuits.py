"""The circuit tables (DESIGN §2): the one place the weights are turned into the tables every
analysis reads. Computed once, in float64, biases folded in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig, ShapeOfConfig


@dataclass(frozen=True)
class CircuitTables(ShapeOfConfig):
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

    def logits_torch(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [b, k] int64 -> last-position logits [b, n] (float64 torch). Cost O(b·h·k·n)."""
        eqke, eqkp = torch.as_tensor(self.eqke), torch.as_tensor(self.eqkp)
        evou, pvou = torch.as_tensor(self.evou), torch.as_tensor(self.pvou)
        q = tokens[:, -1]
        out = torch.as_tensor(self.eupu)[q].clone()
        for h in range(self.n_heads):
            att = torch.softmax(eqke[h][q[:, None], tokens] + eqkp[h][q], dim=-1)  # [b, k]
            # Σ_i att_i·EVOU[x_i] without materialising the [b, k, n] gather
            out += F.embedding_bag(tokens, evou[h], per_sample_weights=att, mode="sum") + att @ pvou[h]
        return out

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens: [b, k] -> last-position logits [b, n] (float64 numpy). Cost O(b·h·k·n)."""
        return self.logits_torch(torch.as_tensor(np.asarray(tokens, dtype=np.int64))).numpy()


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
    s = cfg.score_scale  # multiplies q·k: 1/attn_scale (TransformerLens divides by attn_scale)
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
