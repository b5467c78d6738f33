"""Train the embedded GPT-2 model on the synthetic world and save it in Hugging Face format.

``train_embedded_model(settings, out_dir)`` writes ``out_dir/`` with ``config.json``,
``model.safetensors``, the tokenizer files, ``metrics.json`` (deterministic: same settings on
the same machine give the same bytes) and ``timing.json`` (wall times, the only
non-deterministic output). The directory appears atomically: files are written to a temporary
sibling directory that is renamed into place at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from lenslab.embedded.corpus import World, training_windows
from lenslab.embedded.settings import EmbeddedSettings, parse_settings
from lenslab.embedded.tokenizer import build_tokenizer


def _lr_at(step: int, s: EmbeddedSettings) -> float:
    """Linear warm-up then cosine decay to ``min_lr_frac * lr``."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    t = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def build_model(s: EmbeddedSettings, vocab_size: int, pad_id: int, eos_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=s.seq_len,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        n_inner=4 * s.n_embd,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
        loss_type="ForCausalLM",
    )
    return GPT2LMHeadModel(config)


@torch.no_grad()
def evaluate(model, vocab: Mapping[str, int], items: Mapping[str, list[tuple[str, str]]]) -> dict:
    """Top-1 accuracy of the answer token after each prompt, per item group."""
    model.eval()
    acc = {}
    for name, group in items.items():
        if not group:
            continue
        by_len: dict[int, list[tuple[list[int], int]]] = defaultdict(list)
        for prompt, answer in group:
            ids = [vocab[t] for t in prompt.split()]
            by_len[len(ids)].append((ids, vocab[answer]))
        correct = 0
        for _, batch in sorted(by_len.items()):
            x = torch.tensor([ids for ids, _ in batch])
            y = torch.tensor([a for _, a in batch])
            logits = model(input_ids=x).logits[:, -1]
            correct += int((logits.argmax(-1) == y).sum())
        acc[name] = correct / len(group)
    return acc


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def train_embedded_model(
    settings: Mapping[str, Any], out_dir: str | Path, progress: bool = True
) -> dict:
    """Train the embedded model described by ``settings``; write it to ``out_dir``.

    Returns the metrics dict (also written to ``out_dir/metrics.json``).
    """
    t_start = time.perf_counter()
    s = parse_settings(settings)
    out_dir = Path(out_dir)
    torch.set_num_threads(s.num_threads)
    # Tokens never seen in training get vanishing probabilities; without flushing, their
    # denormal floats make the CPU matmuls several times slower as training goes on.
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(s.seed)

    tok = build_tokenizer(max_length=s.seq_len)
    vocab = tok.get_vocab()
    eos, pad = tok.eos_token_id, tok.pad_token_id
    n_windows = s.steps * s.batch_size
    data = training_windows(s, vocab, n_windows, eos=eos, pad=pad)
    world = World(s)
    items = world.eval_items()

    torch.manual_seed(s.seed)
    model = build_model(s, len(vocab), pad_id=pad, eos_id=eos)
    emb = model.get_input_embeddings().weight
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p is not emb]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or p is emb]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    t_data, c_data = time.perf_counter(), time.process_time()

    model.train()
    losses: list[float] = []
    tokens_seen = 0
    bar = tqdm(range(s.steps), desc="embedded model", disable=not progress, mininterval=2.0)
    for step in bar:
        batch = data[step * s.batch_size : (step + 1) * s.batch_size]
        padding = batch == pad
        labels = batch.masked_fill(padding, -100)
        inputs = batch.masked_fill(padding, eos)  # causal: the tail never reaches real tokens
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, s)
        loss = model(input_ids=inputs, labels=labels).loss
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if s.lazy_embeddings:
            present = torch.zeros(emb.shape[0], dtype=torch.bool)
            present[batch.unique()] = True
            emb.grad[~present] = 0.0
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        tokens_seen += int((~padding).sum())
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == s.steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    t_train, c_train = time.perf_counter(), time.process_time()

    acc = evaluate(model, vocab, items)
    tail = losses[-max(1, min(50, len(losses) // 10)) :]
    metrics = {
        "settings_hash": s.hash(),
        "settings": s.to_dict(),
        "final_loss": round(sum(tail) / len(tail), 6),
        "tokens_seen": tokens_seen,
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(vocab),
        "n_items": {k: len(v) for k, v in items.items()},
        **{f"{k}_accuracy": round(v, 6) for k, v in acc.items()},
    }
    t_eval = time.perf_counter()

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        model.eval()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _write_json(tmp / "metrics.json", metrics)
        timing = {
            "data_s": round(t_data - t_start, 3),
            "train_s": round(t_train - t_data, 3),
            "train_cpu_s": round(c_train - c_data, 3),
            "s_per_step": round((t_train - t_data) / s.steps, 4),
            "eval_s": round(t_eval - t_train, 3),
            "total_s": round(time.perf_counter() - t_start, 3),
            "num_threads": s.num_threads,
        }
        _write_json(tmp / "timing.json", timing)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``, replacing whatever was there."""
    try:
        os.replace(tmp, out_dir)  # works when out_dir is absent or an empty directory
        return
    except OSError:
        pass
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
