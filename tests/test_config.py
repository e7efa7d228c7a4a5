import pytest

from maxk.config import ModelConfig
from maxk.errors import MaxkError


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"d_vocab": 1}, "d_vocab"),
        ({"n_ctx": 0}, "n_ctx"),
        ({"d_model": 0}, "d_model"),
        ({"n_layers": 2}, "1-layer"),
        ({"attn_only": False}, "attention-only"),
        ({"normalization_type": "LN"}, "LayerNorm"),
        ({"d_vocab_out": 7}, "d_vocab_out"),
        ({"d_vocab": 3.5}, "integer"),
    ],
)
def test_invalid_configs(kw, msg):
    base = {"d_vocab": 8, "n_ctx": 3, "d_model": 8, "d_head": 4}
    with pytest.raises(MaxkError, match=msg):
        ModelConfig(**{**base, **kw})


def test_from_tl_dict_defaults():
    cfg = ModelConfig.from_dict(
        {
            "d_vocab": 10,
            "n_ctx": 3,
            "d_model": 8,
            "d_head": 4,
            "n_heads": -1,
            "d_vocab_out": -1,
            "attn_only": True,
            "normalization_type": None,
            "act_fn": "relu",
            "seed": 3,
        }
    )
    assert cfg.n_heads == 2 and cfg.d_vocab_out == 10
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
