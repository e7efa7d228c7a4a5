"""Config + TransformerLens-named state dict -> ``MaxKTransformer``: the one place where a
checkpoint becomes a model, for every loader (safetensors, ``.pth`` pickles, TransformerLens
objects). Whatever describes a model maxk cannot build exactly is a one-line ``MaxkError``:
config fields are checked by ``ModelConfig.from_dict`` (``maxk.tl_fields``), weights here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch

from .config import ModelConfig
from .errors import MaxkError
from .model import MaxKTransformer

# Buffers TransformerLens keeps beside the weights: the mask's fill value (a float) and the
# causal mask (bool). They hold no learned numbers; maxk's forward masks the same way.
TL_BUFFERS = frozenset({"blocks.0.attn.IGNORE", "blocks.0.attn.mask"})

_LAYER = re.compile(r"^blocks\.(\d+)\.")
_NORM = re.compile(r"(^|\.)(ln\w*|q_norm|k_norm)\.")


def _is_float_array(v) -> bool:
    if isinstance(v, torch.Tensor):
        return v.is_floating_point() or v.is_complex()
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "fc"
    return False


def _refuse_foreign(name: str, value, source: str) -> None:
    """An entry the model has no parameter for: refused if it is a weight of some other model."""
    m = _LAYER.match(name)
    if m and m.group(1) != "0":
        raise MaxkError(f"{source}: {name!r} belongs to layer {m.group(1)}; maxk models have exactly one layer")
    if _NORM.search(name):
        raise MaxkError(f"{source}: {name!r} is a LayerNorm/RMSNorm weight; maxk models have no normalization")
    if ".mlp." in name or name.startswith("mlp."):
        raise MaxkError(f"{source}: {name!r} is an MLP weight; maxk models are attention-only")
    if name in TL_BUFFERS or not _is_float_array(value):
        return  # masks, fill values, counters: no learned numbers
    raise MaxkError(f"{source}: tensor {name!r} is not part of a maxk model (loading would drop it)")


def _checked_weight(name: str, t, shape: tuple[int, ...], source: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise MaxkError(f"{source}: {name!r} is not a tensor")
    if tuple(t.shape) != shape:
        raise MaxkError(f"{source}: {name!r} has shape {tuple(t.shape)}, config implies {shape}")
    if not t.is_floating_point():
        raise MaxkError(f"{source}: {name!r} is not a floating-point tensor")
    if not torch.isfinite(t).all():
        raise MaxkError(f"{source}: {name!r} contains NaN or Inf")
    t32 = t.detach().to("cpu", torch.float32)
    if t.dtype.itemsize > 4 and not torch.equal(t32.to(t.dtype), t.detach().cpu()):
        raise MaxkError(
            f"{source}: {name!r} is {str(t.dtype).removeprefix('torch.')} with values float32 "
            "cannot hold; maxk models compute in float32"
        )
    return t32


def model_from_state_dict(cfg: ModelConfig, state: Mapping, source: str = "checkpoint") -> MaxKTransformer:
    """Build a model from a TransformerLens-named state dict, checking that it holds exactly this
    model: every weight present with the config's shape, finite, exactly representable in
    float32; no weight of anything else (further layers, LayerNorm, MLP, unknown float tensors).

    An absent bias is zero. ``blocks.0.attn.IGNORE``/``mask`` and other non-float entries are
    ignored. Cost: O(number of weights).
    """
    if not isinstance(state, Mapping):
        raise MaxkError(f"{source}: the state dict is a {type(state).__name__}, not a mapping")
    model = MaxKTransformer(cfg)
    params = dict(model.named_parameters())
    for name, value in state.items():
        if not isinstance(name, str):
            raise MaxkError(f"{source}: state dict key {name!r} is not a string")
        if name not in params:
            _refuse_foreign(name, value, source)
    for name, p in params.items():
        if name not in state:
            if name.split(".")[-1].startswith("b_"):
                continue  # absent bias: zero, as TransformerLens' attn-only configs may omit
            raise MaxkError(f"{source}: missing weight {name!r}")
        t = _checked_weight(name, state[name], tuple(p.shape), source)
        with torch.no_grad():
            p.copy_(t)
    return model


def model_from_parts(config: Mapping, state: Mapping, source: str = "checkpoint") -> MaxKTransformer:
    """Config fields (a TransformerLens-style dict) + state dict -> model, with every fidelity check."""
    if not isinstance(config, Mapping):
        raise MaxkError(f"{source}: config is a {type(config).__name__}, expected a mapping of fields")
    try:
        cfg = ModelConfig.from_dict(dict(config))
    except MaxkError as e:
        raise MaxkError(f"{source}: {e}") from None
    return model_from_state_dict(cfg, state, source)
