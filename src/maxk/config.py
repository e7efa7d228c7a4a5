"""Model configuration, named as TransformerLens names it, validated with clear errors."""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields

from .errors import MaxkError
from .tl_fields import check_tl_fields

MAX_VOCAB = 4096
MAX_CTX = 512


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a 1-layer attention-only max-of-k transformer (DESIGN §1).

    ``d_vocab`` is n (tokens 0..n-1), ``n_ctx`` is k (sequence length), outputs are n logits.
    ``attn_scale`` has TransformerLens' meaning: the *divisor* of the q·k scores when
    ``use_attn_scale``; None (TransformerLens: -1) is the default sqrt(d_head). ``score_scale`` is
    the factor that multiplies q·k.
    """

    d_vocab: int = 64
    n_ctx: int = 4
    d_model: int = 32
    d_head: int = 32
    n_heads: int = 1
    d_vocab_out: int | None = None
    n_layers: int = 1
    attn_only: bool = True
    normalization_type: str | None = None
    use_attn_scale: bool = True
    attn_scale: float | None = None

    def __post_init__(self) -> None:
        if self.d_vocab_out is None:
            object.__setattr__(self, "d_vocab_out", self.d_vocab)
        object.__setattr__(self, "attn_scale", self._normal_attn_scale())
        self.validate()

    def _normal_attn_scale(self) -> float | None:
        """None for every spelling of the default divisor (so default models compute exactly as
        before), else the custom divisor as a float."""
        a = self.attn_scale
        if a is None or not self.use_attn_scale:
            return None
        if isinstance(a, bool) or not isinstance(a, numbers.Real):
            raise MaxkError(f"invalid model config: attn_scale must be a number, got {a!r}")
        a = float(a)
        if a == -1.0 or (isinstance(self.d_head, int) and self.d_head > 0 and a == math.sqrt(self.d_head)):
            return None
        if not (math.isfinite(a) and a > 0 and math.isfinite(1.0 / a)):
            raise MaxkError(
                f"invalid model config: attn_scale (the divisor of the attention scores) "
                f"must be positive and finite, or -1 for sqrt(d_head), got {a!r}"
            )
        return a

    @property
    def n(self) -> int:
        return self.d_vocab

    @property
    def k(self) -> int:
        return self.n_ctx

    @property
    def score_scale(self) -> float:
        """Factor multiplying q·k scores: 1 without ``use_attn_scale``, else 1/attn_scale, which
        by default is ``d_head**-0.5`` (computed exactly so)."""
        if not self.use_attn_scale:
            return 1.0
        return self.d_head**-0.5 if self.attn_scale is None else 1.0 / self.attn_scale

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise MaxkError(f"invalid model config: {msg}")

        for name in ("d_vocab", "n_ctx", "d_model", "d_head", "n_heads", "n_layers", "d_vocab_out"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
        need(2 <= self.d_vocab <= MAX_VOCAB, f"d_vocab (n) must be in [2, {MAX_VOCAB}], got {self.d_vocab}")
        need(1 <= self.n_ctx <= MAX_CTX, f"n_ctx (k) must be in [1, {MAX_CTX}], got {self.n_ctx}")
        need(1 <= self.d_model <= 4096, f"d_model must be in [1, 4096], got {self.d_model}")
        need(1 <= self.d_head <= 4096, f"d_head must be in [1, 4096], got {self.d_head}")
        need(1 <= self.n_heads <= 64, f"n_heads must be in [1, 64], got {self.n_heads}")
        need(self.n_layers == 1, f"only 1-layer models are supported, got n_layers={self.n_layers}")
        need(self.attn_only is True, "only attention-only models are supported (attn_only must be true)")
        need(self.use_attn_scale in (True, False), f"use_attn_scale must be true or false, got {self.use_attn_scale!r}")
        need(
            self.normalization_type in (None, "None", ""),
            f"only models without LayerNorm are supported, got normalization_type={self.normalization_type!r}",
        )
        need(
            self.d_vocab_out == self.d_vocab,
            f"d_vocab_out must equal d_vocab (outputs are the n tokens), got {self.d_vocab_out} vs {self.d_vocab}",
        )

    def to_dict(self) -> dict:
        """The fields under TransformerLens' names and meanings (``attn_scale`` -1.0 = default), so
        ``HookedTransformerConfig(**cfg.to_dict())`` describes the same model."""
        d = asdict(self)
        if d["normalization_type"] in ("None", ""):
            d["normalization_type"] = None
        if d["attn_scale"] is None:
            d["attn_scale"] = -1.0
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Build from a TransformerLens-style config dict. Fields that do not change this model's
        computation are ignored; one that does, with a value maxk cannot honour, is a MaxkError
        (see ``maxk.tl_fields``)."""
        if not isinstance(d, dict):
            raise MaxkError("invalid model config: expected a mapping")
        check_tl_fields(d)
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for req in ("d_vocab", "n_ctx", "d_model", "d_head"):
            if req not in kw:
                raise MaxkError(f"invalid model config: missing {req!r}")
        if kw.get("normalization_type") in ("None", ""):
            kw["normalization_type"] = None
        if kw.get("d_vocab_out") in (-1,):
            kw["d_vocab_out"] = None
        if kw.get("n_heads", 1) == -1:
            kw["n_heads"] = max(1, int(kw["d_model"]) // int(kw["d_head"]))
        kw.setdefault("n_heads", 1)
        kw.setdefault("n_layers", 1)
        return cls(**kw)


class ShapeOfConfig:
    """n (vocabulary), k (context) and n_heads read off a ``cfg: ModelConfig`` attribute; for the
    table classes that carry one."""

    cfg: ModelConfig

    @property
    def n(self) -> int:
        return self.cfg.d_vocab

    @property
    def k(self) -> int:
        return self.cfg.n_ctx

    @property
    def n_heads(self) -> int:
        return self.cfg.n_heads
