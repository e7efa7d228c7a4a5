import pytest
import torch

from maxk.config import ModelConfig
from maxk.exact import evaluate
from maxk.train import train


def test_training_is_deterministic():
    cfg = ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=8)
    a, b = train(cfg, seed=5, steps=30), train(cfg, seed=5, steps=30)
    c = train(cfg, seed=6, steps=30)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.training_record["final_loss"] == b.training_record["final_loss"]


def test_biases_stay_zero():
    m = train(ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=8), seed=0, steps=20)
    for name, p in m.named_parameters():
        if ".b_" in name:
            assert torch.count_nonzero(p) == 0, name


@pytest.mark.slow
def test_paper_recipe_reaches_99_percent():
    m = train(ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32), seed=0, steps=3000)
    res = evaluate(m)
    assert res.accuracy >= 0.99
