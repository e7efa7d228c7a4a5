import dataclasses
import json
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
    for key in (
        "d_vocab",
        "d_vocab_out",
        "n_ctx",
        "d_model",
        "d_head",
        "n_heads",
        "n_layers",
        "attn_only",
        "normalization_type",
        "use_attn_scale",
    ):
        assert key in meta["config"]
    assert meta["training"]["seed"] == 3
    m2 = maxk.load(p)
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
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
    cfg = Cfg(
        d_model=m.cfg.d_model,
        n_layers=1,
        n_ctx=m.cfg.n_ctx,
        d_head=m.cfg.d_head,
        d_vocab=m.cfg.d_vocab,
        n_heads=m.cfg.n_heads,
        attn_only=True,
        normalization_type=None,
        d_vocab_out=m.cfg.d_vocab,
    )
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


# --- fidelity: a checkpoint maxk cannot build exactly is refused, in one line ------------------

MLP = {
    "blocks.0.mlp.W_in": (8, 16),
    "blocks.0.mlp.b_in": (16,),
    "blocks.0.mlp.W_out": (16, 8),
    "blocks.0.mlp.b_out": (8,),
}

# (case id, config changes, state-dict additions {name: shape or tensor}, message fragment)
REFUSED = [
    ("rotary", {"positional_embedding_type": "rotary"}, {}, "positional_embedding_type"),
    ("alibi", {"positional_embedding_type": "alibi"}, {}, "positional_embedding_type"),
    ("shortformer", {"positional_embedding_type": "shortformer"}, {}, "positional_embedding_type"),
    ("ln-config", {"normalization_type": "LN"}, {}, "LayerNorm"),
    ("lnpre-config", {"normalization_type": "LNPre"}, {}, "LayerNorm"),
    ("ln-weights", {}, {"ln_final.w": (8,), "ln_final.b": (8,)}, "LayerNorm"),
    ("ln1-weights", {}, {"blocks.0.ln1.w": (8,)}, "LayerNorm"),
    ("mlp-weights", {"d_mlp": 16, "act_fn": "relu"}, MLP, "MLP"),
    ("layer-1-weights", {}, {"blocks.1.attn.W_Q": (2, 8, 4)}, "layer 1"),
    ("layer-1-buffer", {}, {"blocks.1.attn.mask": torch.ones(3, 3).bool()}, "layer 1"),
    ("unknown-float", {}, {"embed.W_E_extra": (6, 8)}, "not part of a maxk model"),
    ("unknown-float-scalar", {}, {"blocks.0.attn.temperature": torch.tensor(2.0)}, "not part of a maxk model"),
    ("n_layers", {"n_layers": 2}, {}, "1-layer"),
    ("attn_only", {"attn_only": False, "d_mlp": 16}, {}, "attention-only"),
    ("d_vocab_out", {"d_vocab_out": 7}, {}, "d_vocab_out"),
    ("n_heads", {"n_heads": 3}, {}, "shape"),
    ("d_head", {"d_head": 2}, {}, "shape"),
    ("n_ctx", {"n_ctx": 4}, {}, "shape"),
    ("attention_dir", {"attention_dir": "bidirectional"}, {}, "attention_dir"),
    ("final_rms", {"final_rms": True}, {}, "final_rms"),
    ("parallel_attn_mlp", {"parallel_attn_mlp": True}, {}, "parallel_attn_mlp"),
    ("gated_mlp", {"gated_mlp": True}, {}, "gated_mlp"),
    ("softcap", {"attn_scores_soft_cap": 50.0}, {}, "attn_scores_soft_cap"),
    ("gqa", {"n_key_value_heads": 1}, {}, "n_key_value_heads"),
    ("local-attn", {"use_local_attn": True, "window_size": 2}, {}, "use_local_attn"),
    ("qk-norm", {"use_qk_norm": True}, {}, "use_qk_norm"),
    ("unknown-field", {"frobnication": 3}, {}, "unknown config field"),
    ("attn_scale-0", {"attn_scale": 0.0}, {}, "attn_scale"),
    ("attn_scale-neg", {"attn_scale": -2.0}, {}, "attn_scale"),
    ("float64-inexact", {}, {"embed.W_E": "float64+"}, "float32"),
]

# Accepted: fields and entries that do not change the computation.
HARMLESS = {
    "scale_attn_by_inverse_layer_idx": True,
    "use_split_qkv_input": True,
    "use_attn_result": True,
    "default_prepend_bos": False,
    "act_fn": "gelu",
    "d_mlp": 16,
    "seed": 5,
    "model_name": "x",
    "rotary_dim": 4,
    "attn_scale": -1.0,
    "positional_embedding_type": "standard",
    "attention_dir": "causal",
    "final_rms": False,
    "n_key_value_heads": None,
}


def _state(m, extra: dict) -> dict:
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    for name, spec in extra.items():
        if spec == "float64+":
            sd[name] = sd[name].double() + 1e-12
        elif isinstance(spec, torch.Tensor):
            sd[name] = spec
        else:
            sd[name] = torch.randn(spec, generator=g)
    return sd


def _write(tmp_path, monkeypatch, fmt: str, changes: dict, extra: dict, name: str = "m"):
    """A real checkpoint file of a 2-head n=6 k=3 model with config ``changes`` and state-dict ``extra``."""
    from safetensors.torch import save_file

    m = random_model(n=6, k=3, heads=2)
    sd = _state(m, extra)
    if fmt == "safetensors":
        p = tmp_path / f"{name}.safetensors"
        save_file(sd, str(p), metadata={"config": json.dumps({**m.cfg.to_dict(), **changes}), "format": "maxk"})
        return m, p
    obj = _tl_checkpoint(monkeypatch, m)
    obj["model"].update(sd)
    for key, value in changes.items():
        setattr(obj["model_config"], key, value)
    p = tmp_path / f"{name}.pth"
    torch.save(obj, p)
    return m, p


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("case,changes,extra,msg", REFUSED, ids=[c[0] for c in REFUSED])
def test_unbuildable_checkpoint_is_refused(tmp_path, monkeypatch, fmt, case, changes, extra, msg):
    _, p = _write(tmp_path, monkeypatch, fmt, changes, extra)
    with pytest.raises(MaxkError, match=msg) as e:
        maxk.load(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_harmless_fields_and_buffers_load_unchanged(tmp_path, monkeypatch, fmt):
    extra = {
        "blocks.0.attn.mask": torch.ones(3, 3).tril().bool(),
        "blocks.0.attn.IGNORE": torch.tensor(-1e5),
        "step_count": torch.tensor(7),
    }
    m, p = _write(tmp_path, monkeypatch, fmt, HARMLESS, extra)
    m2 = maxk.load(p)
    assert m2.cfg == m.cfg
    for name, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[name])


def test_float64_and_float16_weights_that_float32_holds_load(tmp_path):
    from safetensors.torch import save_file

    m = random_model(n=6, k=3)
    sd = {k: v.double() for k, v in m.state_dict().items()}
    sd["unembed.b_U"] = m.state_dict()["unembed.b_U"].half().double()
    p = tmp_path / "f64.safetensors"
    save_file(sd, str(p), metadata={"config": m.cfg.to_json()})
    m2 = maxk.load(p)
    assert torch.equal(m2.embed.W_E, m.embed.W_E) and m2.unembed.b_U.dtype == torch.float32


def test_old_metadata_without_attn_scale_loads_as_before(tmp_path):
    from safetensors.torch import save_file

    m = random_model(n=6, k=3)
    old = {k: v for k, v in m.cfg.to_dict().items() if k != "attn_scale"}
    p = tmp_path / "old.safetensors"
    save_file(dict(m.state_dict()), str(p), metadata={"config": json.dumps(old), "format": "maxk"})
    m2 = maxk.load(p)
    assert m2.cfg == m.cfg and m2.cfg.attn_scale is None and m2.cfg.score_scale == m.cfg.d_head**-0.5
    assert checkpoint.read_metadata(maxk.default_model_path())["config"].get("attn_scale") is None
    assert maxk.load("default").cfg.score_scale == 32**-0.5


def _cli(capsys, *args) -> tuple[int, str, str]:
    from maxk import cli

    with pytest.raises(SystemExit) as e:
        cli.run([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("case,changes,extra,msg", REFUSED, ids=[c[0] for c in REFUSED])
def test_cli_refuses_unbuildable_checkpoint(tmp_path, monkeypatch, capsys, fmt, case, changes, extra, msg):
    _, p = _write(tmp_path, monkeypatch, fmt, changes, extra)
    for args in (["info", p], ["import", p, "--out", tmp_path / "out.safetensors"]):
        code, out, err = _cli(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and out == "", err
        assert len(lines) == 1 and lines[0].startswith("maxk: error:") and msg in lines[0], err
    assert [f.name for f in tmp_path.iterdir()] == [p.name]


@pytest.mark.parametrize("case", ["rotary", "mlp-weights", "unknown-float"])
def test_cli_subprocess_refuses(tmp_path, monkeypatch, case):
    import subprocess

    _, changes, extra, msg = next(c for c in REFUSED if c[0] == case)
    _, p = _write(tmp_path, monkeypatch, "pth", changes, extra)
    out = tmp_path / "out.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "maxk", "import", str(p), "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maxk: error:") and msg in lines[0], proc.stderr
    assert [f.name for f in tmp_path.iterdir()] == [p.name]
