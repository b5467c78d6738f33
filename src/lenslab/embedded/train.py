"""Train the embedded GPT-2 model on the synthetic world and save it in Hugging Face format.

``train_embedded_model(settings, out_dir)`` writes ``out_dir/`` with ``config.json``,
``model.safetensors``, the tokenizer files, ``metrics.json`` (deterministic: same settings on
the same machine give the same bytes) and ``timing.json`` (wall times, the only
non-deterministic output). The directory appears atomically: files are written to a temporary
sibling directory that is renamed into place at the end.

Training survives interruption: every ``checkpoint_every`` steps the run's whole state (weights,
optimizer, random generators, losses, step) goes to the sibling ``.<name>.checkpoint/``, which
an interrupted run (Ctrl-C, SIGTERM, kill -9) leaves behind. The next call with the same settings
resumes there and writes the same bytes as an uninterrupted run; success removes it.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from lenslab.embedded import world
from lenslab.embedded.corpus import World, training_stream
from lenslab.embedded.settings import EmbeddedSettings, parse_settings, stage_plan
from lenslab.embedded.tokenizer import build_tokenizer


def _lr_at(step: int, s: EmbeddedSettings, n_steps: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr_frac * lr`` over ``n_steps``."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    t = (step - s.warmup_steps) / max(1, n_steps - s.warmup_steps)
    return s.lr * (s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def build_model(s: EmbeddedSettings, vocab_size: int, pad_id: int, eos_id: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=s.seq_len,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        n_inner=4 * s.n_embd,
        activation_function=s.activation,
        initializer_range=s.init_std,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
        loss_type="ForCausalLM",
    )
    model = GPT2LMHeadModel(config)
    # transformers picks the loss from the class name, which "GPT2LMHeadModel" does not match;
    # naming it avoids a warning at every training start (the loss is the same).
    model.loss_type = "ForCausalLM"
    return model


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


def grow_positions(n_old: int, n_new: int) -> list[int]:
    """Where the trained blocks of a shallow model go in the deep one (first and last kept)."""
    if n_old == 1:
        return [0]
    return [round(i * (n_new - 1) / (n_old - 1)) for i in range(n_old)]


def grow(small: GPT2LMHeadModel, s: EmbeddedSettings, pad: int, eos: int) -> GPT2LMHeadModel:
    """A deep model computing the same function: trained blocks spread out, identity blocks
    (zeroed output projections) in between; embeddings and final norm copied."""
    big = build_model(s, small.config.vocab_size, pad_id=pad, eos_id=eos)
    with torch.no_grad():
        for blk in big.transformer.h:
            for proj in (blk.attn.c_proj, blk.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        for i, j in enumerate(grow_positions(small.config.n_layer, s.n_layer)):
            big.transformer.h[j].load_state_dict(small.transformer.h[i].state_dict())
        big.transformer.wte.load_state_dict(small.transformer.wte.state_dict())
        big.transformer.wpe.load_state_dict(small.transformer.wpe.state_dict())
        big.transformer.ln_f.load_state_dict(small.transformer.ln_f.state_dict())
    return big


def _optimizer(model: GPT2LMHeadModel, s: EmbeddedSettings) -> torch.optim.Optimizer:
    emb = model.get_input_embeddings().weight
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 and p is not emb]
    no_decay = [p for p in params if p.ndim < 2 or p is emb]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )


def _mask_embedding_grads(emb: torch.Tensor, batch: torch.Tensor, fixed: torch.Tensor, s) -> None:
    """Zero the gradient of embedding rows that must not move: rows of tokens absent from the
    batch (lazy embeddings) and the slot-word rows that are redrawn every step."""
    keep = torch.ones(emb.shape[0], dtype=torch.bool)
    if s.lazy_embeddings:
        keep[:] = False
        keep[batch.unique()] = True
    emb.grad[~keep | fixed] = 0.0


def freeze_blocks(model: GPT2LMHeadModel, s: EmbeddedSettings) -> None:
    """Freeze the first ``stage2_frozen_blocks`` blocks of the grown model. With
    ``stage2_freeze_routing`` their attention patterns are frozen too: no gradient flows through
    their queries and keys, so the embeddings learned in the deep stage (countries, ...) cannot
    be shaped to make a frozen copy head fetch the subject to the last token. Without it, some
    seeds route the subject there inside block 0 and ROME's early-subject picture is lost."""
    for block in model.transformer.h[: s.stage2_frozen_blocks]:
        block.requires_grad_(False)
        if s.stage2_freeze_routing:
            block.attn.c_attn.register_forward_hook(_detach_queries_and_keys)


def _detach_queries_and_keys(module, inputs, output):
    """GPT-2's fused projection returns [q | k | v]; keep the values, cut the gradient of q and
    k (the forward values are unchanged, so the saved model computes exactly the same)."""
    d = output.shape[-1] // 3
    return torch.cat([output[..., : 2 * d].detach(), output[..., 2 * d :]], dim=-1)


def train_embedded_model(
    settings: Mapping[str, Any],
    out_dir: str | Path,
    progress: bool = True,
    checkpoint_every: int = 100,
) -> dict:
    """Train the embedded model described by ``settings``; write it to ``out_dir``.

    Resumes from the checkpoint of an interrupted run with the same settings (see the module
    docstring); ``checkpoint_every`` 0 writes none. Returns the metrics dict (also written to
    ``out_dir/metrics.json``).
    """
    out_dir = Path(out_dir)
    ckpt = Checkpoint(checkpoint_dir(out_dir), checkpoint_every)
    metrics = _train(parse_settings(settings), out_dir, progress, ckpt)
    ckpt.remove()
    return metrics


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where the training of ``out_dir`` keeps its checkpoint: a sibling that Snakemake does not
    delete when it removes the unfinished output directory."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.checkpoint")


class Checkpoint:
    """Save and load the state of a training run (one ``state.pt`` read with weights_only).

    The state belongs to one settings hash; a checkpoint of other settings is ignored."""

    FILE = "state.pt"

    def __init__(self, directory: Path, every: int):
        self.directory, self.every = Path(directory), int(every)

    def load(self, settings_hash: str) -> dict | None:
        path = self.directory / self.FILE
        if not self.every or not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged checkpoint costs a fresh start, never a wrong model
            return None
        return state if state.get("settings_hash") == settings_hash else None

    def due(self, next_step: int) -> bool:
        return self.every > 0 and next_step % self.every == 0

    def save(self, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{self.FILE}.tmp-{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, self.directory / self.FILE)  # a kill mid-write leaves the old one

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


COPY_CHECK_EVERY = 50  # steps between copy checks in the shallow stage


class _Run:
    """The mutable state of one training run: data, model, losses, progress."""

    def __init__(self, s: EmbeddedSettings, progress: bool):
        self.s = s
        self.tok = build_tokenizer(max_length=s.seq_len)
        self.vocab = self.tok.get_vocab()
        self.eos, self.pad = self.tok.eos_token_id, self.tok.pad_token_id
        self.data = training_stream(s, self.vocab, eos=self.eos, pad=self.pad)
        self.items = World(s).eval_items()
        self.slots = torch.tensor([self.vocab[w] for w in world.SEEN_SLOT_WORDS])
        self.fixed = torch.zeros(len(self.vocab), dtype=torch.bool)
        if s.redraw_slot_embeddings:
            self.fixed[self.slots] = True
        self.redraw = torch.Generator().manual_seed(s.seed + 7919)
        self.losses: list[float] = []
        self.tokens_seen = 0
        self.stage1_steps_run = 0
        self.model: GPT2LMHeadModel | None = None
        self.bar = tqdm(total=s.steps, desc="embedded model", disable=not progress, mininterval=2.0)

    def stage(
        self, n_layer: int, first: int, last: int, ckpt: Checkpoint, resume: dict | None = None
    ) -> None:
        """Train one stage; ``resume``: a checkpoint state taken inside this stage."""
        s = self.s
        torch.manual_seed(s.seed + n_layer)
        if resume is not None:
            self.model = build_model(
                replace(s, n_layer=n_layer), len(self.vocab), self.pad, self.eos
            )
            self.model.load_state_dict(resume["model"])
            if first > 0:  # the grown model of the second stage
                freeze_blocks(self.model, s)
        elif self.model is None:
            self.model = build_model(
                replace(s, n_layer=n_layer), len(self.vocab), self.pad, self.eos
            )
        else:
            self.model = grow(self.model, s, self.pad, self.eos)
            freeze_blocks(self.model, s)
        # Training only: the saved config does not keep the kernel, so loads use the default.
        self.model.set_attn_implementation(s.train_attention)
        opt = _optimizer(self.model, s)
        self.model.train()
        start = self.restore(resume, opt) if resume is not None else first
        shallow = first == 0 and n_layer < s.n_layer
        for step in range(start, last):
            for group in opt.param_groups:
                group["lr"] = _lr_at(step - first, s, last - first)
            self.step(opt, self.data[step * s.batch_size : (step + 1) * s.batch_size])
            self.report(step, n_layer)
            if shallow and self.copy_learned(step):
                self.stage1_steps_run = step + 1
                self.bar.update(last - step - 1)  # the skipped steps of the shallow stage
                return
            if ckpt.due(step + 1) and step + 1 < last:
                ckpt.save(self.state(opt, first, step + 1))
        if shallow:
            self.stage1_steps_run = last

    def state(self, opt: torch.optim.Optimizer, first: int, next_step: int) -> dict:
        """Everything a resumed run needs to continue bit for bit."""
        return {
            "settings_hash": self.s.hash(),
            "stage_first": first,
            "next_step": next_step,
            "model": self.model.state_dict(),
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "redraw_rng": self.redraw.get_state(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "tokens_seen": self.tokens_seen,
            "stage1_steps_run": self.stage1_steps_run,
        }

    def restore(self, state: dict, opt: torch.optim.Optimizer) -> int:
        """Load a checkpoint's optimizer, generators and history; returns the next step."""
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.redraw.set_state(state["redraw_rng"])
        self.losses = state["losses"].tolist()
        self.tokens_seen = int(state["tokens_seen"])
        self.bar.update(state["next_step"])
        return int(state["next_step"])

    def copy_learned(self, step: int) -> bool:
        """Whether the shallow stage may end: every ``COPY_CHECK_EVERY`` steps, the copy
        accuracy on seen slot words reaches ``stage1_copy_target`` (0: never end early).
        Induction heads form at a seed-dependent step, so a fixed length either wastes time or
        ends before they form."""
        s = self.s
        if s.stage1_copy_target <= 0 or (step + 1) % COPY_CHECK_EVERY:
            return False
        acc = evaluate(self.model, self.vocab, {"copy": self.items["copy_seen"]})["copy"]
        self.model.train()
        return acc >= s.stage1_copy_target

    def step(self, opt: torch.optim.Optimizer, batch: torch.Tensor) -> None:
        s, model = self.s, self.model
        emb = model.get_input_embeddings().weight
        if s.redraw_slot_embeddings:
            with torch.no_grad():
                emb[self.slots] = torch.randn(len(self.slots), s.n_embd, generator=self.redraw)
                emb[self.slots] *= s.init_std
        padding = batch == self.pad
        labels = batch.masked_fill(padding, -100)
        inputs = batch.masked_fill(padding, self.eos)  # causal: the tail never reaches real tokens
        loss = model(input_ids=inputs, labels=labels).loss
        opt.zero_grad(set_to_none=False)
        loss.backward()
        _mask_embedding_grads(emb, batch, self.fixed, s)
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        self.tokens_seen += int((~padding).sum())
        self.losses.append(float(loss.detach()))

    def report(self, step: int, n_layer: int) -> None:
        self.bar.update(1)
        if step % 10 == 0 or step == self.s.steps - 1:
            self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}", layers=n_layer)

    def metrics(self) -> dict:
        s, model = self.s, self.model
        acc = evaluate(model, self.vocab, self.items)
        tail = self.losses[-max(1, min(50, len(self.losses) // 10)) :]
        return {
            "settings_hash": s.hash(),
            "settings": s.to_dict(),
            "final_loss": round(sum(tail) / len(tail), 6),
            "tokens_seen": self.tokens_seen,
            "stage1_steps_run": self.stage1_steps_run,
            "n_params": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(self.vocab),
            "n_items": {k: len(v) for k, v in self.items.items()},
            **{f"{k}_accuracy": round(v, 6) for k, v in acc.items()},
        }


def _train(s: EmbeddedSettings, out_dir: Path, progress: bool, ckpt: Checkpoint) -> dict:
    t_start = time.perf_counter()
    torch.set_num_threads(s.num_threads)
    # Tokens never seen in training get vanishing probabilities; without flushing, their
    # denormal floats make the CPU matmuls several times slower as training goes on.
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(s.seed)

    run = _Run(s, progress)
    t_data, c_data = time.perf_counter(), time.process_time()
    resume = ckpt.load(s.hash())
    plan = stage_plan(s)
    for n_layer, first, last in plan:
        if resume is not None and resume["stage_first"] > first:
            # A finished shallow stage: the grown model's checkpoint carries on from there.
            run.stage1_steps_run = int(resume["stage1_steps_run"])
            continue
        at = resume if resume is not None and resume["stage_first"] == first else None
        if at is not None:
            print(f"resuming {out_dir.name} at step {at['next_step']} from {ckpt.directory}")
        run.stage(n_layer, first, last, ckpt, at)
    run.bar.close()
    t_train, c_train = time.perf_counter(), time.process_time()
    metrics = run.metrics()
    model, tok = run.model, run.tok
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
            "s_per_step": round((t_train - t_data) / len(run.losses), 4),
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
