"""Models and reference tables shared by the test modules (imported, never collected)."""

from __future__ import annotations

import math

import numpy as np
import torch
from flint import arb, arb_mat, ctx

from maxk.config import ModelConfig
from maxk.model import MaxKTransformer

ctx.prec = 300


def random_model(n=8, k=3, d_model=8, d_head=4, heads=1, seed=0, scale=0.5, biases=True) -> MaxKTransformer:
    """A model with random weights (and random biases unless ``biases=False``)."""
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=d_model, d_head=d_head, n_heads=heads)
    m = MaxKTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    m.init_weights(g)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if biases or ".W_" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def max_like_model(n: int, k: int, seed: int, noise: float, sharp: float = 8.0) -> MaxKTransformer:
    """A hand-built max-of-k model (attention grows with the token, values copy the token onto an
    arc read by the unembedding) plus Gaussian noise of std ``noise`` on every parameter."""
    d = 6
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=d, d_head=d)
    m = MaxKTransformer(cfg)
    theta = torch.linspace(0, 2.0, n)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.embed.W_E[:, 0] = torch.arange(n) / n
        m.embed.W_E[:, 1] = 1.0
        m.embed.W_E[:, 2] = torch.cos(theta)
        m.embed.W_E[:, 3] = torch.sin(theta)
        a = m.blocks[0].attn
        a.W_Q[0, 1, 0] = sharp * math.sqrt(d)
        a.W_K[0, 0, 0] = float(n)
        a.W_V[0, 2, 1] = 4.0
        a.W_V[0, 3, 2] = 4.0
        a.W_O[0, 1, 4] = 1.0
        a.W_O[0, 2, 5] = 1.0
        m.unembed.W_U[4] = torch.cos(theta)
        m.unembed.W_U[5] = torch.sin(theta)
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    return m


def arb_matrix(a: np.ndarray) -> arb_mat:
    return arb_mat([[arb(float(v)) for v in row] for row in np.atleast_2d(a)])


def arb_tables(model) -> dict[str, list[arb_mat]]:
    """The circuit tables in arb, straight from DESIGN §2's formulas."""
    cfg = model.cfg
    w = {k: v.detach().to(torch.float64).numpy() for k, v in model.named_parameters()}
    Em, Pm = arb_matrix(w["embed.W_E"]), arb_matrix(w["pos_embed.W_pos"])
    n, k = cfg.n, cfg.k
    ones_n = arb_mat([[1] for _ in range(n)])
    last = arb_matrix(w["pos_embed.W_pos"][k - 1 : k])
    resq = Em + ones_n * last
    s = arb(1) / arb(cfg.d_head).sqrt() if cfg.use_attn_scale else arb(1)
    WU = arb_matrix(w["unembed.W_U"])
    out: dict[str, list] = {"eqke": [], "eqkp": [], "evou": [], "pvou": []}
    ones_k = arb_mat([[1] for _ in range(k)])
    for h in range(cfg.n_heads):
        WQ, WK, WV, WO = (arb_matrix(w[f"blocks.0.attn.W_{x}"][h]) for x in "QKVO")
        bQ, bK, bV = (arb_matrix(w[f"blocks.0.attn.b_{x}"][h][None]) for x in "QKV")
        query = resq * WQ + ones_n * bQ
        out["eqke"].append((query * (Em * WK).transpose()) * s)
        out["eqkp"].append((query * (Pm * WK + ones_k * bK).transpose()) * s)
        ou = WO * WU
        out["evou"].append((Em * WV + ones_n * bV) * ou)
        out["pvou"].append(Pm * WV * ou)
    bO, bU = arb_matrix(w["blocks.0.attn.b_O"][None]), arb_matrix(w["unembed.b_U"][None])
    out["eupu"] = [resq * WU + ones_n * (bO * WU + bU)]
    return out
