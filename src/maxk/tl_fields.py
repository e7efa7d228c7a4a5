"""Which TransformerLens config fields maxk can honour, and which it must refuse.

A ``HookedTransformerConfig`` (TransformerLens 1.x-3.x) has ~90 fields. ``ModelConfig`` keeps the
ones that shape our model; of the rest, each is either *inert* for a 1-layer, attention-only,
LayerNorm-free model with learned positional embeddings (hooks, tokenizer, init, device, and the
settings of features that are off), or *changes the computation* and must hold its neutral value,
else the checkpoint describes a model maxk cannot build and is refused. A field maxk does not know
is accepted only if it is None or False (every TransformerLens feature flag is off that way).

Facts checked in TransformerLens' ``HookedTransformerConfig`` (v2.18, v3.5, v3.9),
``components/abstract_attention.py`` and ``components/transformer_block.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import MaxkError

# Fields ModelConfig carries (validated there).
MODEL_FIELDS = frozenset(
    {
        "d_vocab",
        "n_ctx",
        "d_model",
        "d_head",
        "n_heads",
        "d_vocab_out",
        "n_layers",
        "attn_only",
        "normalization_type",
        "use_attn_scale",
        "attn_scale",
    }
)


def _off(v) -> bool:
    return v is None or v is False or v == 0


def _softcap_off(v) -> bool:
    return v is None or v <= 0  # TransformerLens: a soft cap is active only when > 0


# Fields that change what the model computes: name -> (neutral-value test, what the neutral value is).
MUST_BE_NEUTRAL: dict[str, tuple[Callable[[object], bool], str]] = {
    "positional_embedding_type": (lambda v: v == "standard", "'standard' (learned W_pos)"),
    "attention_dir": (lambda v: v == "causal", "'causal'"),
    "final_rms": (_off, "false (no final RMSNorm)"),
    "uses_rms_norm": (_off, "false (no RMSNorm)"),
    "post_embedding_ln": (_off, "false (no LayerNorm)"),
    "use_normalization_before_and_after": (_off, "false (no LayerNorm)"),
    "use_qk_norm": (_off, "false (no q/k norm)"),
    "parallel_attn_mlp": (_off, "false (no MLP)"),
    "gated_mlp": (_off, "false (no MLP)"),
    "num_experts": (_off, "None (no MLP)"),
    "n_key_value_heads": (lambda v: v is None, "None (no grouped-query attention)"),
    "use_local_attn": (_off, "false (global attention)"),
    "attn_scores_soft_cap": (_softcap_off, "disabled (<= 0)"),
    "output_logits_soft_cap": (_softcap_off, "disabled (<= 0)"),
    "clip_qkv": (lambda v: v is None, "None (no q/k/v clamp)"),
    "use_logn_attn": (_off, "false (no log-n query scaling)"),
    "use_attention_sinks": (_off, "false (no attention sinks)"),
    "load_in_4bit": (_off, "false (unquantized)"),
    "quantization_method": (lambda v: v is None, "None (unquantized)"),
}

# Fields with no effect on this model's logits. Notes on the less obvious ones:
#   scale_attn_by_inverse_layer_idx multiplies attn_scale by layer_id + 1 = 1 in layer 0;
#   use_split_qkv_input / use_attn_in / use_attn_result only add hook points (same sums);
#   act_fn, d_mlp, experts_per_token, norm_topk_prob, use_hook_mlp_in: MLP only (attn_only holds
#   and MLP weights are refused); eps, layer_norm_folding: LayerNorm only; rotary_*, NTK_*, yarn_*,
#   use_dynamic_ntk_rope, relative_attention_*: other positional types only; window_size,
#   attn_types: local attention only; tie_word_embeddings: encoder-decoder models only; dtype:
#   the weights' dtype, checked on the weights themselves.
INERT = frozenset(
    {
        "scale_attn_by_inverse_layer_idx",
        "use_split_qkv_input",
        "use_attn_in",
        "use_attn_result",
        "use_hook_tokens",
        "use_hook_mlp_in",
        "act_fn",
        "d_mlp",
        "experts_per_token",
        "norm_topk_prob",
        "eps",
        "layer_norm_folding",
        "dtype",
        "device",
        "n_devices",
        "seed",
        "model_name",
        "original_architecture",
        "tokenizer_name",
        "tokenizer_prepends_bos",
        "default_prepend_bos",
        "from_checkpoint",
        "checkpoint_index",
        "checkpoint_label_type",
        "checkpoint_value",
        "init_mode",
        "initializer_range",
        "init_weights",
        "n_params",
        "trust_remote_code",
        "decoder_start_token_id",
        "train_seq_length",
        "window_size",
        "attn_types",
        "tie_word_embeddings",
        "ungroup_grouped_query_attention",
        "rotary_dim",
        "rotary_base",
        "rotary_base_local",
        "rotary_scaling_factor",
        "rotary_adjacent_pairs",
        "use_dynamic_ntk_rope",
        "use_NTK_by_parts_rope",
        "NTK_by_parts_low_freq_factor",
        "NTK_by_parts_high_freq_factor",
        "NTK_by_parts_factor",
        "NTK_original_ctx_len",
        "use_yarn_rope",
        "yarn_factor",
        "yarn_attention_factor",
        "yarn_beta_fast",
        "yarn_beta_slow",
        "yarn_original_max_position_embeddings",
        "yarn_truncate",
        "yarn_global_attn_only",
        "relative_attention_max_distance",
        "relative_attention_num_buckets",
    }
)


def _short(v) -> str:
    r = repr(v).replace("\n", " ")
    return r if len(r) <= 60 else r[:57] + "..."


def check_tl_fields(d: dict) -> None:
    """Raise MaxkError (one line) if a TransformerLens-style config dict asks for anything maxk's
    model does not compute: a non-neutral value of a computation-changing field, or an unknown
    field that is not None/False. Fields of ``ModelConfig`` are left to its own validation."""
    for name, value in d.items():
        if not isinstance(name, str):
            raise MaxkError(f"invalid model config: field name {_short(name)} is not a string")
        if name in MODEL_FIELDS or name in INERT or name.startswith("_"):
            continue
        if name in MUST_BE_NEUTRAL:
            ok, neutral = MUST_BE_NEUTRAL[name]
            try:
                fine = bool(ok(value))
            except TypeError:
                fine = False
            if not fine:
                raise MaxkError(
                    f"unsupported model: {name}={_short(value)} changes the computation; maxk models need {neutral}"
                )
        elif not (value is None or value is False):
            raise MaxkError(
                f"unsupported model: unknown config field {name}={_short(value)} "
                "(maxk cannot tell whether it changes the model)"
            )
