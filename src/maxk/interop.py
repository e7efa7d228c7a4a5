"""TransformerLens interop, both ways (optional extra ``maxk[transformer-lens]``).

``to_hooked_transformer(model)`` builds the ``HookedTransformer`` that computes the same logits;
``from_hooked_transformer(obj)`` reads one back through the same state-dict code and fidelity
checks as every checkpoint (``maxk.state_dict``), so a TransformerLens model maxk cannot build
exactly is refused, never approximated.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .errors import MaxkError
from .model import MaxKTransformer
from .state_dict import TL_BUFFERS, model_from_parts

# transformer_lens is an optional extra, imported only lazily (or for type checking); where it is
# not installed pyright cannot resolve it, which is expected, so these two imports ignore that.
if TYPE_CHECKING:
    from transformer_lens import HookedTransformer  # pyright: ignore[reportMissingImports]


def _transformer_lens() -> Any:
    try:
        # optional extra: unresolvable by pyright where not installed (see the TYPE_CHECKING import)
        import transformer_lens  # pyright: ignore[reportMissingImports]
    except ImportError:
        raise MaxkError("TransformerLens is not installed: pip install 'maxk[transformer-lens]'") from None
    if not hasattr(transformer_lens, "HookedTransformer"):  # removed in TransformerLens 4
        raise MaxkError("this TransformerLens has no HookedTransformer: pip install 'transformer-lens<4'")
    return transformer_lens


def to_hooked_transformer(model: MaxKTransformer) -> HookedTransformer:
    """A ``transformer_lens.HookedTransformer`` (on the CPU, float32) with ``model``'s config and
    weights: same logits on every input. Needs the ``transformer-lens`` extra."""
    tl = _transformer_lens()
    known = {f.name for f in dataclasses.fields(tl.HookedTransformerConfig)}
    fields = model.cfg.to_dict()
    if model.cfg.attn_scale is None:
        fields.pop("attn_scale")  # older TransformerLens has no such field; its default is ours
    missing = sorted(set(fields) - known)
    if missing:
        raise MaxkError(f"this TransformerLens has no config field(s) {', '.join(missing)}: cannot express the model")
    # Settings TransformerLens defaults to anyway (where it has them), spelled out; no random init.
    extra = {
        "positional_embedding_type": "standard",
        "attention_dir": "causal",
        "device": "cpu",
        "dtype": torch.float32,
        "model_name": "maxk",
        "init_weights": False,
    }
    fields.update({k: v for k, v in extra.items() if k in known})
    with warnings.catch_warnings():  # TransformerLens 3.x deprecates HookedTransformer (for 4.0)
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        ht = tl.HookedTransformer(tl.HookedTransformerConfig(**fields))
    result = ht.load_state_dict(
        {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}, strict=False
    )
    if result.unexpected_keys or set(result.missing_keys) - TL_BUFFERS:
        raise MaxkError(
            f"TransformerLens model does not match maxk's: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    return ht.eval()


def _config_fields(cfg: Any) -> dict:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dict(vars(cfg))  # a HookedTransformerConfig: every field, as set after __post_init__
    raise MaxkError(f"expected a HookedTransformerConfig or a dict of its fields, got {type(cfg).__name__}")


def _parts(obj: Any, state_dict: Mapping | None) -> tuple[Any, Mapping]:
    if state_dict is not None:
        return obj, state_dict
    if isinstance(obj, tuple) and len(obj) == 2:
        return obj
    if isinstance(obj, torch.nn.Module) and hasattr(obj, "cfg"):
        return obj.cfg, obj.state_dict()
    raise MaxkError("expected a HookedTransformer, a (config, state_dict) pair, or a config and state_dict=")


def from_hooked_transformer(obj: Any, state_dict: Mapping | None = None) -> MaxKTransformer:
    """A ``MaxKTransformer`` from a TransformerLens model: a ``HookedTransformer``, a
    ``(HookedTransformerConfig or dict, state_dict)`` pair, or a config with ``state_dict=``.

    Goes through ``maxk.state_dict.model_from_parts``: a config or weights that describe anything
    but maxk's 1-layer attention-only model (LayerNorm, MLP, rotary, ...) raise MaxkError. Does not
    itself import TransformerLens."""
    cfg, state = _parts(obj, state_dict)
    if not isinstance(state, Mapping):
        raise MaxkError(f"TransformerLens model: the state dict is a {type(state).__name__}, not a mapping")
    state = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    model = model_from_parts(_config_fields(cfg), state, "TransformerLens model")
    model.training_record = {"imported_from": "transformer_lens"}
    return model
