"""maxk.interop where TransformerLens may be absent: reading a (config, state dict) pair needs no
TransformerLens; building a HookedTransformer without it is one clear MaxkError."""

import importlib.util

import pytest
import torch

from maxk.errors import MaxkError
from maxk.interop import from_hooked_transformer, to_hooked_transformer

from .helpers import random_model


@pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is not None, reason="transformer_lens installed")
def test_to_hooked_transformer_without_transformer_lens_is_one_clear_error():
    with pytest.raises(MaxkError, match=r"not installed: pip install 'maxk\[transformer-lens\]'"):
        to_hooked_transformer(random_model())


def test_from_config_and_state_dict_pair():
    m = random_model(n=6, k=3, heads=2)
    tl_cfg = {**m.cfg.to_dict(), "positional_embedding_type": "standard", "act_fn": "relu", "device": "cpu"}
    sd = {
        **m.state_dict(),
        "blocks.0.attn.IGNORE": torch.tensor(-torch.inf),
        "blocks.0.attn.mask": torch.empty(0, 0, dtype=torch.bool),
    }
    for m2 in (from_hooked_transformer((tl_cfg, sd)), from_hooked_transformer(tl_cfg, state_dict=sd)):
        assert m2.cfg == m.cfg
        assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m.state_dict().items())
    with pytest.raises(MaxkError, match="LayerNorm"):
        from_hooked_transformer({**tl_cfg, "normalization_type": "LN"}, state_dict=sd)
    with pytest.raises(MaxkError, match="not part of a maxk model"):
        from_hooked_transformer(tl_cfg, state_dict={**sd, "extra.W": torch.zeros(3)})
    with pytest.raises(MaxkError, match="expected a HookedTransformer"):
        from_hooked_transformer(42)
