"""maxk <-> TransformerLens, both ways: the same logits on random inputs (needs the extra:
pip install -e '.[test,transformer-lens]'; run with pytest -m interop)."""

import dataclasses

import pytest
import torch

transformer_lens = pytest.importorskip("transformer_lens")

import maxk  # noqa: E402
from maxk.circuits import circuit_tables  # noqa: E402
from maxk.config import ModelConfig  # noqa: E402
from maxk.errors import MaxkError  # noqa: E402
from maxk.interop import from_hooked_transformer, to_hooked_transformer  # noqa: E402
from maxk.model import MaxKTransformer  # noqa: E402

from .helpers import random_model  # noqa: E402

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated:DeprecationWarning"),
]

CASES = [  # n, k, heads, use_attn_scale, attn_scale
    (8, 3, 1, True, None),
    (12, 4, 2, True, None),
    (16, 5, 3, True, None),
    (10, 4, 2, False, None),
    (10, 4, 2, True, 3.0),
    (9, 3, 1, True, 0.7),
]


def _model(n, k, heads, use_scale, scale, seed=0) -> MaxKTransformer:
    base = random_model(n=n, k=k, d_model=8, d_head=4, heads=heads, seed=seed)  # random weights and biases
    m = MaxKTransformer(dataclasses.replace(base.cfg, use_attn_scale=use_scale, attn_scale=scale))
    m.load_state_dict(base.state_dict())
    return m


def _tokens(n, k, seed=1) -> torch.Tensor:
    return torch.randint(0, n, (256, k), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,k,heads,use_scale,scale", CASES)
def test_maxk_to_tl_same_logits(n, k, heads, use_scale, scale):
    m = _model(n, k, heads, use_scale, scale)
    ht = to_hooked_transformer(m)
    assert isinstance(ht, transformer_lens.HookedTransformer)
    assert ht.cfg.use_attn_scale == use_scale
    if use_scale:
        assert ht.cfg.attn_scale == pytest.approx(scale if scale else 2.0)  # d_head 4 -> sqrt 2
    toks = _tokens(n, k)
    with torch.no_grad():
        # in float64 the two forwards agree to rounding whatever order TransformerLens sums in
        torch.testing.assert_close(ht.to(torch.float64)(toks), m.double()(toks), atol=1e-10, rtol=0)


@pytest.mark.parametrize("n,k,heads,use_scale,scale", CASES)
def test_tl_to_maxk_same_logits(n, k, heads, use_scale, scale):
    cfg = transformer_lens.HookedTransformerConfig(
        d_vocab=n,
        d_vocab_out=n,
        n_ctx=k,
        d_model=8,
        d_head=4,
        n_heads=heads,
        n_layers=1,
        attn_only=True,
        normalization_type=None,
        use_attn_scale=use_scale,
        attn_scale=scale or -1.0,
        device="cpu",
        seed=None,
    )
    ht = transformer_lens.HookedTransformer(cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in ht.parameters():  # TransformerLens zeroes biases: randomise everything
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    toks = _tokens(n, k, seed=2)
    for m in (
        from_hooked_transformer(ht),
        from_hooked_transformer((ht.cfg, ht.state_dict())),
        from_hooked_transformer(vars(ht.cfg), state_dict=ht.state_dict()),
    ):
        assert m.cfg.attn_scale == (scale if use_scale else None)
        with torch.no_grad():
            want = ht(toks)
            torch.testing.assert_close(m(toks), want, atol=1e-5, rtol=0)
        tab = circuit_tables(m)
        torch.testing.assert_close(torch.as_tensor(tab.logits(toks.numpy())), want[:, -1].double(), atol=1e-5, rtol=0)


def test_round_trip_is_exact(tmp_path):
    m = _model(8, 3, 2, True, 3.0)
    back = from_hooked_transformer(to_hooked_transformer(m))
    assert back.cfg == m.cfg
    for name, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[name])
    p = tmp_path / "m.safetensors"
    maxk.save(back, p)
    assert maxk.load(p).cfg.attn_scale == 3.0


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"normalization_type": "LN"}, "LayerNorm"),
        ({"normalization_type": "LNPre"}, "LayerNorm"),
        ({"attn_only": False, "d_mlp": 16}, "attention-only"),
        ({"positional_embedding_type": "rotary"}, "positional_embedding_type"),
        ({"n_layers": 2}, "1-layer"),
        ({"attention_dir": "bidirectional"}, "attention_dir"),
    ],
)
def test_tl_models_maxk_cannot_build_are_refused(change, msg):
    kw = {
        "d_vocab": 8,
        "d_vocab_out": 8,
        "n_ctx": 3,
        "d_model": 8,
        "d_head": 4,
        "n_heads": 1,
        "n_layers": 1,
        "attn_only": True,
        "normalization_type": None,
        "device": "cpu",
        "act_fn": "relu",
    }
    ht = transformer_lens.HookedTransformer(transformer_lens.HookedTransformerConfig(**{**kw, **change}))
    with pytest.raises(MaxkError, match=msg) as e:
        from_hooked_transformer(ht)
    assert "\n" not in str(e.value)


def test_float64_weights_that_float32_cannot_hold_are_refused():
    ht = to_hooked_transformer(_model(8, 3, 1, True, None))
    sd = {k: v.double() for k, v in ht.state_dict().items()}
    from_hooked_transformer(ht.cfg, state_dict=sd)  # float32 values in float64: exact, accepted
    sd["embed.W_E"] = sd["embed.W_E"] + 1e-12
    with pytest.raises(MaxkError, match="float32"):
        from_hooked_transformer(ht.cfg, state_dict=sd)


def test_scale_attn_by_inverse_layer_idx_is_the_identity_in_layer_0():
    kw = {
        "d_vocab": 8,
        "d_vocab_out": 8,
        "n_ctx": 3,
        "d_model": 8,
        "d_head": 4,
        "n_heads": 2,
        "n_layers": 1,
        "attn_only": True,
        "normalization_type": None,
        "device": "cpu",
    }
    plain = transformer_lens.HookedTransformer(transformer_lens.HookedTransformerConfig(**kw))
    scaled = transformer_lens.HookedTransformer(
        transformer_lens.HookedTransformerConfig(**kw, scale_attn_by_inverse_layer_idx=True)
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    scaled.load_state_dict(plain.state_dict())
    toks = _tokens(8, 3)
    with torch.no_grad():
        assert torch.equal(scaled(toks), plain(toks))  # TransformerLens: attn_scale *= layer_id + 1 = 1
        ours = from_hooked_transformer(scaled).double()
        torch.testing.assert_close(ours(toks), plain.to(torch.float64)(toks), atol=1e-10, rtol=0)


def test_default_config_matches_tl_scale():
    cfg = transformer_lens.HookedTransformerConfig(
        d_vocab=8, n_ctx=3, d_model=32, d_head=32, n_layers=1, attn_only=True, normalization_type=None, device="cpu"
    )
    assert ModelConfig.from_dict(vars(cfg)).attn_scale is None  # sqrt(32) set by TL = maxk's default
