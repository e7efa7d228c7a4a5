import dataclasses
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

import maxk
from maxk import checkpoint
from maxk.errors import MaxkError
from maxk.safe_pickle import UnsafePickleError

from .helpers import random_model



def test_safetensors_roundtrip_with_tl_config_names(tmp_path):
    m = random_model(n=6, k=3, heads=2)
    p = tmp_path / "m.safetensors"
    checkpoint.save(m, p, {"seed": 3, "steps": 10, "final_loss": 0.5})
    meta = checkpoint.read_metadata(p)
    for key in ("d_vocab", "d_vocab_out", "n_ctx", "d_model", "d_head", "n_heads", "n_layers", "attn_only",
                "normalization_type", "use_attn_scale"):
        assert key in meta["config"]
    assert meta["training"]["seed"] == 3
    m2 = maxk.load(p)
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]


def test_shipped_model_loads():
    m = maxk.load("default")
    assert (m.cfg.d_vocab, m.cfg.n_ctx, m.cfg.d_model) == (64, 4, 32)
    assert m.training_record["seed"] == 0


def _fake_tl(monkeypatch):
    """Register a stand-in transformer_lens module so a test can *write* a TL-style pickle."""
    mod = types.ModuleType("transformer_lens.HookedTransformerConfig")

    @dataclasses.dataclass
    class HookedTransformerConfig:
        d_model: int
        n_layers: int
        n_ctx: int
        d_head: int
        d_vocab: int = -1
        n_heads: int = -1
        attn_only: bool = False
        normalization_type: object = "LN"
        d_vocab_out: int = -1
        dtype: object = torch.float32
        positional_embedding_type: str = "standard"

    HookedTransformerConfig.__module__ = mod.__name__
    HookedTransformerConfig.__qualname__ = "HookedTransformerConfig"
    mod.HookedTransformerConfig = HookedTransformerConfig
    monkeypatch.setitem(sys.modules, "transformer_lens", types.ModuleType("transformer_lens"))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return HookedTransformerConfig


def _tl_checkpoint(monkeypatch, m, key="model_config"):
    Cfg = _fake_tl(monkeypatch)
    cfg = Cfg(d_model=m.cfg.d_model, n_layers=1, n_ctx=m.cfg.n_ctx, d_head=m.cfg.d_head, d_vocab=m.cfg.d_vocab,
              n_heads=m.cfg.n_heads, attn_only=True, normalization_type=None, d_vocab_out=m.cfg.d_vocab)
    sd = dict(m.state_dict())
    sd["blocks.0.attn.IGNORE"] = torch.tensor(-1e5)
    sd["blocks.0.attn.mask"] = torch.ones(m.cfg.n_ctx, m.cfg.n_ctx).tril().bool()
    return {
        "model": sd,
        key: cfg,
        "run_config": {"lr": 1e-3, "betas": (0.9, 0.999)},
        "train_metrics": [{"loss": np.float32(0.25), "step": np.int64(3), "acc": np.arange(3.0)}],
        "test_metrics": {"loss": torch.tensor([0.1, 0.2])},
    }


@pytest.mark.parametrize("key", ["model_config", "config"])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_transformer_lens_pth_import(tmp_path, monkeypatch, key, writer):
    m = random_model(n=6, k=3, heads=2)
    obj = _tl_checkpoint(monkeypatch, m, key)
    p = tmp_path / "tl.pth"
    if writer == "torch":
        torch.save(obj, p)
    else:
        with open(p, "wb") as fh:
            pickle.dump(obj, fh)
    monkeypatch.delitem(sys.modules, "transformer_lens.HookedTransformerConfig")
    monkeypatch.delitem(sys.modules, "transformer_lens")
    m2 = maxk.load(p)
    assert "transformer_lens" not in sys.modules
    assert m2.cfg == m.cfg
    for name, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[name])
    assert maxk.evaluate(m2).correct == maxk.evaluate(m).correct


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload", [_Payload, _ExecPayload])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, payload, writer):
    marker = tmp_path / "pwned"
    obj = {"model": random_model().state_dict(), "config": payload(marker)}
    p = tmp_path / "evil.pth"
    if writer == "torch":
        torch.save(obj, p)
    else:
        with open(p, "wb") as fh:
            pickle.dump(obj, fh)
    with pytest.raises(UnsafePickleError, match="refusing"):
        maxk.load(p)
    assert not marker.exists()


def test_bad_checkpoints(tmp_path):
    m = random_model(n=6, k=3)
    with pytest.raises(MaxkError, match="no such file"):
        maxk.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(MaxkError):
        maxk.load(junk)
    trunc = tmp_path / "trunc.safetensors"
    checkpoint.save(m, trunc)
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(MaxkError):
        maxk.load(trunc)


def test_nan_and_shape_errors(tmp_path):
    m = random_model(n=6, k=3)
    with torch.no_grad():
        m.embed.W_E[0, 0] = float("nan")
    p = tmp_path / "nan.safetensors"
    checkpoint.save(m, p)
    with pytest.raises(MaxkError, match="NaN or Inf"):
        maxk.load(p)
    from safetensors.torch import save_file

    good = random_model(n=6, k=3)
    sd = {k: v.clone() for k, v in good.state_dict().items()}
    sd["unembed.W_U"] = torch.zeros(8, 5)
    q = tmp_path / "shape.safetensors"
    save_file(sd, str(q), metadata={"config": good.cfg.to_json()})
    with pytest.raises(MaxkError, match="shape"):
        maxk.load(q)
