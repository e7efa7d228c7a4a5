"""attn_scale with TransformerLens' meaning: the divisor of q·k (default sqrt(d_head)). A custom
value loads from a TransformerLens-style checkpoint and evaluates as TransformerLens would; the
default computes exactly as before."""

import dataclasses
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import maxk
from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.errors import MaxkError
from maxk.model import MaxKTransformer
from maxk.proofs import enclose as E

from .helpers import random_model


def _with_scale(m: MaxKTransformer, **kw) -> MaxKTransformer:
    out = MaxKTransformer(dataclasses.replace(m.cfg, **kw))
    out.load_state_dict(m.state_dict())
    return out


def _by_hand_logits(m: MaxKTransformer, tokens: np.ndarray, divisor: float) -> np.ndarray:
    """DESIGN §1 in float64, scores divided by ``divisor`` as TransformerLens does; last position."""
    w = {k: v.detach().double().numpy() for k, v in m.named_parameters()}
    res = w["embed.W_E"][tokens] + w["pos_embed.W_pos"][None, : tokens.shape[1]]  # [b, k, d]
    out = res[:, -1] @ w["unembed.W_U"] + w["unembed.b_U"] + w["blocks.0.attn.b_O"] @ w["unembed.W_U"]
    for h in range(m.cfg.n_heads):
        q = res[:, -1] @ w["blocks.0.attn.W_Q"][h] + w["blocks.0.attn.b_Q"][h]
        k = res @ w["blocks.0.attn.W_K"][h] + w["blocks.0.attn.b_K"][h]
        v = res @ w["blocks.0.attn.W_V"][h] + w["blocks.0.attn.b_V"][h]
        s = np.einsum("be,bke->bk", q, k) / divisor
        a = np.exp(s - s.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        out += np.einsum("bk,bke->be", a, v) @ w["blocks.0.attn.W_O"][h] @ w["unembed.W_U"]
    return out


def test_default_spellings_are_the_default_and_bit_identical():
    cfg = ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=32)
    for spelled in (-1, -1.0, math.sqrt(32), np.sqrt(32), None):
        c = dataclasses.replace(cfg, attn_scale=spelled)
        assert c == cfg and c.attn_scale is None and c.score_scale == 32**-0.5
    assert dataclasses.replace(cfg, use_attn_scale=False, attn_scale=7.0).attn_scale is None
    assert dataclasses.replace(cfg, use_attn_scale=False).score_scale == 1.0
    assert cfg.to_dict()["attn_scale"] == -1.0 and ModelConfig.from_dict(cfg.to_dict()) == cfg
    custom = dataclasses.replace(cfg, attn_scale=3.0)
    assert custom.score_scale == 1 / 3.0 and ModelConfig.from_dict(json.loads(custom.to_json())) == custom


@pytest.mark.parametrize("bad", [0, -2.0, float("inf"), float("nan"), "2", True, 1e-310])
def test_bad_attn_scale_is_refused(bad):
    with pytest.raises(MaxkError, match="attn_scale"):
        ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=4, attn_scale=bad)


@pytest.mark.parametrize("divisor,heads", [(3.0, 1), (0.7, 2), (1.0, 2)])
def test_custom_attn_scale_evaluates_as_transformer_lens_would(tmp_path, divisor, heads):
    base = random_model(n=7, k=4, d_model=8, d_head=4, heads=heads, seed=3)
    # a TransformerLens-style checkpoint whose config carries the custom divisor
    p = tmp_path / "tl.pth"
    torch.save({"model": base.state_dict(), "config": {**base.cfg.to_dict(), "attn_scale": divisor}}, p)
    m = maxk.load(p)
    assert m.cfg.attn_scale == divisor
    tokens = np.random.default_rng(0).integers(0, 7, size=(300, 4))
    want = _by_hand_logits(m, tokens, divisor)
    got = m.last_logits(torch.as_tensor(tokens)).detach().double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(circuit_tables(m).logits(tokens), want, atol=1e-10, rtol=0)
    # and it is not the default model's computation (unless the divisor is sqrt(d_head))
    assert not np.allclose(_by_hand_logits(m, tokens, 2.0), want, atol=1e-3)


@pytest.mark.parametrize("a", [3.0, 0.7, 1.0, 10.0 / 3.0, 5e-300, 1e300])
def test_reciprocal_enclosure_is_sound(a):
    cfg = ModelConfig(d_vocab=4, n_ctx=2, d_model=4, d_head=4, attn_scale=a)
    s = E.attn_scale_interval(cfg)
    lo, hi = float(s.lo), float(s.hi)
    assert Fraction(lo) * Fraction(a) <= 1 <= Fraction(hi) * Fraction(a)
    assert lo <= cfg.score_scale <= hi and np.nextafter(np.nextafter(lo, np.inf), np.inf) >= hi


def test_enclosed_tables_contain_the_custom_scale_tables():
    m = _with_scale(random_model(n=6, k=3, heads=2, seed=1), attn_scale=0.7)
    tab, enc = circuit_tables(m), E.enclosed_tables(m)
    for name in enc.NAMES:
        x = getattr(tab, name)
        assert np.all(enc.interval(name).lo <= x) and np.all(x <= enc.interval(name).hi), name
    default = E.enclosed_tables(_with_scale(m, attn_scale=None))
    assert not np.allclose(default.lo.eqke, enc.lo.eqke)
