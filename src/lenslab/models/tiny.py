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
WORDS = [f"w{i}" for i in range(80)]


def build_tiny(arch: str, seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised causal LM of architecture ``arch`` (a ``model_type``)."""
    config = AutoConfig.for_model(arch, **{**_COMMON, **TINY_CONFIGS.get(arch, {}), **overrides})
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
