"""Write the model of the `scale` study: a randomly initialised GPT-2-XL-shaped model.

48 blocks, d = 1600, 25 heads, vocabulary 50,257, context 1024 (1.56 B parameters, 6.2 GB in
float32), saved in Hugging Face format so that it loads like any local model; nothing comes from
the hub. Its tokenizer is the embedded world's word-level tokenizer padded with unused tokens to
the 50,257 ids (words outside the world are <unk>; the weights are random anyway: the study
measures time and memory at GPT-2-XL scale, not what the model knows).

    python benchmarks/make_scale_model.py [results/models/gpt2-xl-random]

About a minute of CPU and 6.2 GB of disk; a second call with the same settings does nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lenslab.embedded.tokenizer import EOS, PAD, UNK, pre_tokenizer, vocabulary
from lenslab.io import atomic_path

SHAPE = {"n_layer": 48, "n_embd": 1600, "n_head": 25, "vocab_size": 50257, "n_positions": 1024}


def padded_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    words = vocabulary()
    words += [f"<unused{i}>" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        model_max_length=SHAPE["n_positions"], clean_up_tokenization_spaces=False,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="results/models/gpt2-xl-random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    stamp = {**SHAPE, "seed": args.seed}
    if (out / "lenslab_scale.json").is_file() and json.loads(
        (out / "lenslab_scale.json").read_text()
    ) == stamp:
        print(f"{out} is already there")
        return
    torch.manual_seed(args.seed)
    tokenizer = padded_tokenizer(SHAPE["vocab_size"])
    config = GPT2Config(**SHAPE, bos_token_id=0, eos_token_id=0, pad_token_id=2)
    model = GPT2LMHeadModel(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "lenslab_scale.json").write_text(json.dumps(stamp, sort_keys=True))
    print(f"wrote {out}: {n_params:,} parameters")


if __name__ == "__main__":
    main()
