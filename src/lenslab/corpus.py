"""Text a model samples itself: an offline corpus for the tuned lens of any model.

No corpus reaches every machine, but every model can write: ``sample_documents`` draws
documents from the model with a fixed seed (pure sampling, temperature 1, no top-k/top-p: the
model's own distribution, which is what the tuned lens is asked to match), each started from the
tokenizer's document separator. The last ``eval_fraction`` of the documents is the held-out
evaluation text (``lenslab.lenses.tuned_config.load_documents``), never trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lenslab.errors import LensLabError


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


def write_corpus(docs: list[str], path: str | Path) -> None:
    """One JSON record per line, ``{"text": ...}``: documents keep their own newlines."""
    lines = [json.dumps({"text": d}, ensure_ascii=False) for d in docs]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
