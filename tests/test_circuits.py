import numpy as np
import pytest
import torch

from maxk.circuits import circuit_tables
from maxk.exact import all_sequences

from .helpers import random_model


@pytest.mark.parametrize("heads,biases,k", [(1, False, 3), (1, True, 3), (3, True, 4), (2, True, 1)])
def test_tables_reproduce_forward_pass(heads, biases, k):
    m = random_model(n=7, k=k, heads=heads, biases=biases, seed=heads + k)
    tab = circuit_tables(m)
    toks = all_sequences(7, k)
    ref = m.double().last_logits(torch.as_tensor(toks)).numpy()
    np.testing.assert_allclose(tab.logits(toks), ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(tab.logits_torch(torch.as_tensor(toks)).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_table_shapes_and_dtype():
    m = random_model(n=9, k=4, heads=2)
    tab = circuit_tables(m)
    assert tab.eqke.shape == (2, 9, 9) and tab.eqkp.shape == (2, 9, 4)
    assert tab.evou.shape == (2, 9, 9) and tab.pvou.shape == (2, 4, 9) and tab.eupu.shape == (9, 9)
    assert all(a.dtype == np.float64 for a in (tab.eqke, tab.eqkp, tab.evou, tab.pvou, tab.eupu))


def test_attention_scale_is_used():
    m = random_model(n=5, k=2, d_head=16)
    tab = circuit_tables(m)
    from dataclasses import replace

    from maxk.model import MaxKTransformer

    m2 = MaxKTransformer(replace(m.cfg, use_attn_scale=False))
    m2.load_state_dict(m.state_dict())
    np.testing.assert_allclose(circuit_tables(m2).eqke, tab.eqke * 4.0, rtol=1e-12)
