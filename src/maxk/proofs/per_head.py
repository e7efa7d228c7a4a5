"""Threshold proofs for models with several heads, one head at a time.

For an input with max m and an output o != m, the h-head model's logit difference is

    Δ(o) = D(o) + Σ_h A_h(o),

D the direct path with every bias (b_O included) and A_h head h's share through W_U. Let the
*view* of head h be the one-head model with that head's W_Q, W_K, W_V, b_Q, b_K, b_V, its W_O
multiplied by H (the number of heads) and everything else shared: its logit difference is
Δ_h(o) = D(o) + H·A_h(o), and (1/H) Σ_h Δ_h(o) = Δ(o). So an input every view gets right
(Δ_h(o) > 0 for all h and o != m) the model gets right. The attention of each view is the
model's head h exactly (same scores; one layer, no LayerNorm).

A single-head threshold proof (thresholds T[q, m]: every input with query q, max m and non-max
tokens <= T[q, m] is correct) applied to each view gives T_h; the elementwise minimum over heads
is then a sound threshold table for the model. With H a power of two the view's W_O = H·W_O is
exact in floating point, so each view is exactly the real-number model the argument needs;
other head counts are refused. Cost: H times the single-head proof, plus O(H·d_head·d_model)
to build the views.

That minimum asks every head to solve the task alone; the threshold strategies now split the
margin between the heads instead (``maxk.proofs.head_split``, on the same views).
``per_head_thresholds`` stays as the plain minimum (the before of benchmarks/bench_multi_head_proofs.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ..errors import MaxkError
from ..model import MaxKTransformer
from ..registry import Refusal

POWER_OF_TWO_HEADS = Refusal(
    "handles several heads one head at a time, which needs a power-of-two number of heads (W_O·H exact)",
    lambda cfg, dist: cfg.n_heads & (cfg.n_heads - 1) != 0,
)


def head_views(model: MaxKTransformer) -> list[MaxKTransformer]:
    """The one-head view of every head (module docstring): head h's attention weights, W_O times
    the number of heads H (exact: H must be a power of two, else MaxkError), the rest shared.
    Cost O(H·d_head·d_model)."""
    H = model.cfg.n_heads
    if H & (H - 1):
        raise MaxkError(f"{POWER_OF_TWO_HEADS.reason}; got {H} heads")
    cfg = dataclasses.replace(model.cfg, n_heads=1)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    views = []
    for h in range(H):
        view = MaxKTransformer(cfg)
        sd = dict(state)
        for name in ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V"):
            sd[f"blocks.0.attn.{name}"] = state[f"blocks.0.attn.{name}"][h : h + 1].clone()
        sd["blocks.0.attn.W_O"] = (state["blocks.0.attn.W_O"][h : h + 1] * float(H)).clone()
        view.load_state_dict(sd)
        for p in view.parameters():
            p.requires_grad_(False)
        views.append(view)
    return views


def per_head_thresholds(model: MaxKTransformer, thresholds: Callable[[MaxKTransformer], np.ndarray]) -> np.ndarray:
    """``thresholds(model)`` for one head; for several, the elementwise minimum over the heads'
    views of ``thresholds(view)`` (each [n, n] indexed [q, m]; sound by the module docstring).
    ``thresholds`` counts its own FLOPs."""
    if model.cfg.n_heads == 1:
        return thresholds(model)
    with torch.no_grad():
        tables = [thresholds(v) for v in head_views(model)]
    return np.minimum.reduce(tables)
