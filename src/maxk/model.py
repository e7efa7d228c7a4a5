"""The 1-layer attention-only transformer of DESIGN §1, with TransformerLens parameter names."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from .config import ModelConfig

BIAS_NAMES = ("blocks.0.attn.b_Q", "blocks.0.attn.b_K", "blocks.0.attn.b_V", "blocks.0.attn.b_O", "unembed.b_U")


class _Embed(nn.Module):
    def __init__(self, n: int, d: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.zeros(n, d))


class _PosEmbed(nn.Module):
    def __init__(self, k: int, d: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.zeros(k, d))


class _Attention(nn.Module):
    def __init__(self, h: int, d: int, dh: int):
        super().__init__()
        self.W_Q = nn.Parameter(torch.zeros(h, d, dh))
        self.W_K = nn.Parameter(torch.zeros(h, d, dh))
        self.W_V = nn.Parameter(torch.zeros(h, d, dh))
        self.W_O = nn.Parameter(torch.zeros(h, dh, d))
        self.b_Q = nn.Parameter(torch.zeros(h, dh))
        self.b_K = nn.Parameter(torch.zeros(h, dh))
        self.b_V = nn.Parameter(torch.zeros(h, dh))
        self.b_O = nn.Parameter(torch.zeros(d))


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = _Attention(cfg.n_heads, cfg.d_model, cfg.d_head)


class _Unembed(nn.Module):
    def __init__(self, d: int, n: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.zeros(d, n))
        self.b_U = nn.Parameter(torch.zeros(n))


class MaxKTransformer(nn.Module):
    """1-layer, attention-only, no LayerNorm; state-dict keys as in TransformerLens.

    ``forward(tokens: [batch, k]) -> logits [batch, k, n]`` (causal attention at every position);
    the prediction is read at the last position.
    """

    # Set by training / loading (not by ``__init__``, so a fresh model has no such attribute).
    training_record: dict | None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = _Embed(cfg.d_vocab, cfg.d_model)
        self.pos_embed = _PosEmbed(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList([_Block(cfg)])
        assert cfg.d_vocab_out is not None  # ModelConfig.__post_init__ defaults it to d_vocab
        self.unembed = _Unembed(cfg.d_model, cfg.d_vocab_out)

    @property
    def _attn(self) -> _Attention:
        """The attention of the single block (``nn.ModuleList`` indexing is typed as ``Module``)."""
        return cast(_Block, self.blocks[0]).attn

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """TransformerLens' default init: weights ~ N(0, 0.8/sqrt(d_model)), biases zero."""
        std = 0.8 / math.sqrt(self.cfg.d_model)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name in BIAS_NAMES:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [batch, k] ints in [0, n) -> logits [batch, k, n]."""
        attn = self._attn
        k = tokens.shape[-1]
        res = self.embed.W_E[tokens] + self.pos_embed.W_pos[:k]  # [b, k, d]
        q = torch.einsum("bpd,hde->bhpe", res, attn.W_Q) + attn.b_Q[None, :, None, :]
        kk = torch.einsum("bpd,hde->bhpe", res, attn.W_K) + attn.b_K[None, :, None, :]
        v = torch.einsum("bpd,hde->bhpe", res, attn.W_V) + attn.b_V[None, :, None, :]
        scores = torch.einsum("bhqe,bhke->bhqk", q, kk) * self.cfg.score_scale
        mask = torch.ones(k, k, dtype=torch.bool, device=tokens.device).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        pattern = scores.softmax(dim=-1)
        z = torch.einsum("bhqk,bhke->bhqe", pattern, v)
        out = torch.einsum("bhqe,hed->bqd", z, attn.W_O) + attn.b_O
        return (res + out) @ self.unembed.W_U + self.unembed.b_U

    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: [batch, k] -> logits at the last position [batch, n]."""
        return self.forward(tokens)[:, -1, :]
