"""Write the model of the `scale` study: a randomly initialised GPT-2-XL-shaped model.

48 blocks, d = 1600, 25 heads, vocabulary 50,257, context 1024 (1.56 B parameters, 6.2 GB in
float32), saved in Hugging Face format so that it loads like any local model; nothing comes from
the hub. Its tokenizer is the embedded world's word-level tokenizer padded with unused tokens to
the 50,257 ids, with the words of every prompt set in conf/prompts/ added, so that the paper
study's prompts keep their lengths (the weights are random anyway: the study measures time and
memory at GPT-2-XL scale, not what the model knows).

    python benchmarks/make_scale_model.py [results/models/gpt2-xl-random]

About a minute of CPU and 6.2 GB of disk; a second call with the same settings does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
import yaml
from tokenizers import Tokenizer, decoders, models
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lenslab.embedded.tokenizer import EOS, PAD, UNK, pre_tokenizer, vocabulary
from lenslab.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
SHAPE = {"n_layer": 48, "n_embd": 1600, "n_head": 25, "vocab_size": 50257, "n_positions": 1024}


def prompt_words() -> list[str]:
    """The pre-tokenizer's pieces of every prompt set's texts, subjects, answers and targets
    (sorted, so the tokenizer is the same on every machine)."""
    split = pre_tokenizer()
    words: set[str] = set()
    for path in sorted((REPO / "conf/prompts").glob("*.yaml")):
        for prompt in (yaml.safe_load(path.read_text()) or {}).get("prompts", []):
            texts = [prompt.get(k) for k in ("text", "subject", "answer")]
            for text in [t for t in texts if t] + list(prompt.get("targets", [])):
                words.update(piece for piece, _ in split.pre_tokenize_str(str(text)))
    return sorted(words)


def padded_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    words = vocabulary()
    known = set(words)
    words += [w for w in prompt_words() if w not in known]
    words += [f"<unused{i}>" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        model_max_length=SHAPE["n_positions"], clean_up_tokenization_spaces=False,
    )  # fmt: skip


def _write_stamp(directory: Path, stamp: dict) -> None:
    with atomic_path(directory / "lenslab_scale.json") as tmp:
        tmp.write_text(json.dumps(stamp, sort_keys=True))


def _replace_tokenizer(out: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    """Write the tokenizer's files next to the model and move each into place (the 6 GB of
    weights stay)."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tokenizer.save_pretrained(tmp)
        for path in Path(tmp).iterdir():
            os.replace(path, out / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="results/models/gpt2-xl-random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    stamp = {**SHAPE, "seed": args.seed}
    tokenizer = padded_tokenizer(SHAPE["vocab_size"])
    words = hashlib.sha256("\n".join(prompt_words()).encode()).hexdigest()[:16]
    stamp_path = out / "lenslab_scale.json"
    old = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    if {k: old.get(k) for k in stamp} == stamp:
        if old.get("words") != words:  # the same weights; prompt sets with other words
            _replace_tokenizer(out, tokenizer)
            _write_stamp(out, {**stamp, "words": words})
            print(f"{out}: tokenizer updated for the prompt sets' words")
        else:
            print(f"{out} is already there")
        return
    torch.manual_seed(args.seed)
    config = GPT2Config(**SHAPE, bos_token_id=0, eos_token_id=0, pad_token_id=2)
    model = GPT2LMHeadModel(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_stamp(tmp, {**stamp, "words": words})
    print(f"wrote {out}: {n_params:,} parameters")


if __name__ == "__main__":
    main()
