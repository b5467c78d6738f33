"""Tiny random models of many architectures, built from configs in code (no download).

Tests and benchmarks use them to exercise the adapter on each layout; ``save_tiny`` writes one in
HF format so the normal loading path (``load_model``) can be tested end to end.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

# Sizes small enough for a test, big enough that heads and layers differ.
_COMMON = dict(vocab_size=96, bos_token_id=1, eos_token_id=2, pad_token_id=0)
TINY_CONFIGS: dict[str, dict] = {
    "gpt2": dict(n_layer=3, n_embd=32, n_head=4, n_positions=64),
    "gpt_neox": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        rotary_pct=0.5,
    ),
    "llama": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
    "mistral": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        head_dim=8,
    ),
    "qwen2": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
    "opt": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        ffn_dim=64,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
    ),
    "gptj": dict(n_layer=3, n_embd=32, n_head=4, n_positions=64, rotary_dim=4),
    "gemma": dict(
        num_hidden_layers=3,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        head_dim=8,
    ),
}
_DEC = dict(
    num_hidden_layers=3,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)
_MOE = dict(num_experts_per_tok=2, moe_intermediate_size=32)
# Gated DeltaNet (linear attention) of Qwen3-Next / Qwen3.5, between two attention-free blocks.
_LINEAR = dict(
    layer_types=["linear_attention", "full_attention", "linear_attention"],
    head_dim=8,
    linear_key_head_dim=8,
    linear_value_head_dim=8,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
)
# More families, by name: (model_type, config). A name may be a layout variant of a type.
# Multipliers are set away from 1 so a lens that ignores them is caught.
FAMILY_CONFIGS: dict[str, tuple[str, dict]] = {
    "gpt_neo": (
        "gpt_neo",
        dict(
            num_layers=3,
            hidden_size=32,
            num_heads=4,
            max_position_embeddings=64,
            attention_types=[[["global", "local"], 1], [["global"], 1]],
            window_size=4,
        ),
    ),
    "gpt_bigcode": ("gpt_bigcode", TINY_CONFIGS["gpt2"]),
    "bloom": ("bloom", dict(n_layer=3, hidden_size=32, n_head=4)),
    "falcon": ("falcon", dict(_DEC, num_key_value_heads=None)),
    "falcon_seq": ("falcon", dict(_DEC, num_key_value_heads=None, parallel_attn=False)),
    "falcon_new": (
        "falcon",
        dict(_DEC, new_decoder_architecture=True, num_kv_heads=2, num_key_value_heads=None),
    ),
    "mpt": ("mpt", dict(n_layers=3, d_model=32, n_heads=4, max_seq_len=64, expansion_ratio=2)),
    "opt_350m": (
        "opt",
        dict(
            TINY_CONFIGS["opt"], hidden_size=48, word_embed_proj_dim=32, do_layer_norm_before=False
        ),
    ),
    "phi": ("phi", dict(_DEC, partial_rotary_factor=0.5)),
    "stablelm": ("stablelm", _DEC),
    "starcoder2": ("starcoder2", _DEC),
    "gemma2": ("gemma2", dict(_DEC, head_dim=8, sliding_window=4)),
    "gemma3": ("gemma3_text", dict(_DEC, head_dim=8, sliding_window=4)),
    "olmo2": ("olmo2", _DEC),
    "cohere": ("cohere", dict(_DEC, logit_scale=0.0625)),
    "granite": (
        "granite",
        dict(
            _DEC,
            embedding_multiplier=12.0,
            logits_scaling=8.0,
            residual_multiplier=0.22,
            attention_multiplier=0.125,
        ),
    ),
    "mixtral": ("mixtral", dict(_DEC, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        "qwen2_moe",
        dict(_DEC, **_MOE, num_experts=4, shared_expert_intermediate_size=32),
    ),
    "qwen3_moe": ("qwen3_moe", dict(_DEC, **_MOE, num_experts=4, head_dim=8)),
    "deepseek_v3": (
        "deepseek_v3",
        dict(
            _DEC,
            **_MOE,
            n_routed_experts=4,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
            kv_lora_rank=16,
            q_lora_rank=16,
            qk_rope_head_dim=4,
            qk_nope_head_dim=4,
            v_head_dim=8,
            rope_scaling=None,
        ),
    ),
    "gpt_oss": (
        "gpt_oss",
        dict(_DEC, num_local_experts=4, num_experts_per_tok=2, head_dim=8, sliding_window=4),
    ),
    "llama4": (
        "llama4_text",
        dict(
            _DEC,
            head_dim=8,
            num_local_experts=2,
            num_experts_per_tok=1,
            intermediate_size_mlp=64,
            interleave_moe_layer_step=2,
        ),
    ),
    "cohere2": ("cohere2", dict(_DEC, logit_scale=0.125, sliding_window=4)),
    "granitemoe": (
        "granitemoe",
        dict(
            _DEC,
            num_local_experts=4,
            num_experts_per_tok=2,
            embedding_multiplier=5.0,
            logits_scaling=8.0,
            residual_multiplier=0.3,
        ),
    ),
    "nemotron": ("nemotron", _DEC),  # LayerNorm1P: scale 1 + w
    "glm4": ("glm4", _DEC),
    "olmo3": ("olmo3", dict(_DEC, sliding_window=4)),
    "exaone4": ("exaone4", dict(_DEC, sliding_window=4)),
    # Hybrids: a mixer per block (attention, linear attention, mamba or a short conv).
    "qwen3_next": (
        "qwen3_next",
        dict(_DEC, **_MOE, **_LINEAR, num_experts=4, shared_expert_intermediate_size=32),
    ),
    "qwen3_5": ("qwen3_5_text", dict(_DEC, **_LINEAR)),
    "lfm2": ("lfm2", dict(_DEC, layer_types=["conv", "full_attention", "conv"])),
    "jamba": (
        "jamba",
        dict(
            _DEC,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=2,
            mamba_d_state=4,
            mamba_dt_rank=4,
            mamba_expand=2,
        ),
    ),
    "falcon_h1": (
        "falcon_h1",
        dict(
            _DEC,
            head_dim=8,
            mamba_d_ssm=32,
            mamba_n_heads=4,
            mamba_d_head=8,
            mamba_n_groups=1,
            mamba_d_state=4,
            mamba_chunk_size=8,
            embedding_multiplier=3.0,
            lm_head_multiplier=0.5,
            attention_in_multiplier=0.7,
            attention_out_multiplier=1.3,
            ssm_in_multiplier=0.8,
            ssm_out_multiplier=1.2,
            key_multiplier=0.9,
            mlp_multipliers=[1.1, 0.9],
        ),
    ),
    # MiniMax: lightning (linear) attention and attention blocks, residual after the input norm.
    "minimax": (
        "minimax",
        dict(
            _DEC,
            head_dim=8,
            num_local_experts=2,
            num_experts_per_tok=1,
            layer_types=["linear_attention", "full_attention", "linear_attention"],
            block_size=4,
        ),
    ),
    # Gemma 4: per-layer inputs, KV sharing (the last 2 of 4 blocks reuse earlier K/V).
    "gemma4": (
        "gemma4_text",
        dict(
            _DEC,
            num_hidden_layers=4,
            head_dim=8,
            global_head_dim=8,
            sliding_window=4,
            layer_types=[*("sliding_attention", "full_attention")] * 2,
            num_kv_shared_layers=2,
            vocab_size_per_layer_input=96,
            hidden_size_per_layer_input=8,
        ),
    ),
    # Gemma 3n: AltUp keeps 2 predictions of the stream; lenslab refuses it at load.
    "gemma3n": (
        "gemma3n_text",
        dict(
            _DEC,
            num_hidden_layers=4,
            head_dim=8,
            sliding_window=4,
            layer_types=[*("sliding_attention", "full_attention")] * 2,
            num_kv_shared_layers=2,
            vocab_size_per_layer_input=96,
            hidden_size_per_layer_input=8,
            altup_num_inputs=2,
            laurel_rank=4,
            activation_sparsity_pattern=[0.0] * 4,
        ),
    ),
}
WORDS = [f"w{i}" for i in range(80)]


def build_tiny(arch: str, seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised causal LM of architecture ``arch``: a ``model_type`` of
    ``TINY_CONFIGS`` (or any other, with transformers' defaults) or a name of
    ``FAMILY_CONFIGS``."""
    model_type, sizes = FAMILY_CONFIGS.get(arch, (arch, TINY_CONFIGS.get(arch, {})))
    config = AutoConfig.for_model(model_type, **{**_COMMON, **sizes, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _spread_norms(model, seed)
    return model.eval()


def _spread_norms(model: PreTrainedModel, seed: int) -> None:
    """Random init leaves norms at identity; perturb them so affine-vs-plain tests can fail."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                for param in module.parameters(recurse=False):
                    param.add_(0.1 * torch.randn(param.shape, generator=gen))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``WORDS`` plus specials, ids below the tiny vocab size."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({w: i + 4 for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def save_tiny(arch: str, path: str | Path, seed: int = 0, **overrides) -> Path:
    """Write a tiny model and its tokenizer in HF format (safetensors)."""
    path = Path(path)
    build_tiny(arch, seed, **overrides).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path
