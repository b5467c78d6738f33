"""Per-job resources (memory, wall time, GPUs) estimated from the model and prompt configs.

Snakemake rules take these as ``resources:`` so that a cluster executor (``--profile
workflow/profiles/slurm``) asks for what each job needs: a 1.5B-parameter model's extraction
asks for gigabytes, a figure for almost nothing. The estimates are upper bounds built from the
model's shape (parameter count, depth, width, vocabulary), its dtype, the prompt lengths and the
batch sizes; they are deliberately generous (``SAFETY``), because a job killed for memory costs
more than an idle gigabyte. A retried job (``snakemake --retries``) asks for more each attempt.

The shape comes, in order, from the model config's ``shape`` block, the ``embedded`` settings,
a local ``config.json`` (a directory ``source``), the local Hugging Face cache, or the table of
known hub models below; a model none of these describe is a clear error naming the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenslab.config import cfg_get as _get
from lenslab.errors import LensLabError
from lenslab.runtime import compute_threads

MB = 1024**2
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
BASE_MB = 800  # python + torch + transformers imported, before any tensor
LIGHT_MB = 1000  # a table or figure job: pandas and matplotlib, small tables
SAFETY = 1.5  # every estimate is multiplied by this
# Sustained matmul rate of one job, used for wall-time estimates only (a 2-thread CPU job; GPU).
CPU_FLOPS = 2e10
GPU_FLOPS = 5e13
LOAD_BYTES_PER_S = 2e8  # reading weights from a network file system
MIN_RUNTIME = 10  # minutes: schedulers round up anyway; keeps tiny jobs from timing out
LIGHT_RUNTIME = 10
# A job whose estimated compute is under this many seconds spends its time starting Python,
# importing torch and loading the model: single-threaded work, so it takes one scheduler core
# and two such jobs run side by side on 2 cores.
START_UP_BOUND_S = 2.0
EMBEDDED_VOCAB = 516  # lenslab.embedded.tokenizer.vocabulary(), checked in the tests

KINDS = ("extract", "lens", "patching", "forward", "train_tuned", "train_embedded", "light")


@dataclass(frozen=True)
class ModelShape:
    """What memory and compute depend on."""

    n_params: int
    n_layer: int
    d_model: int
    vocab: int
    n_positions: int = 1024


# Published shapes of the hub models in conf/model (parameter counts include embeddings).
KNOWN_SHAPES: dict[str, ModelShape] = {
    "openai-community/gpt2": ModelShape(124_439_808, 12, 768, 50257, 1024),
    "openai-community/gpt2-medium": ModelShape(354_823_168, 24, 1024, 50257, 1024),
    "openai-community/gpt2-xl": ModelShape(1_557_611_200, 48, 1600, 50257, 1024),
    "EleutherAI/pythia-70m": ModelShape(70_426_624, 6, 512, 50304, 2048),
    "EleutherAI/pythia-160m": ModelShape(162_322_944, 12, 768, 50304, 2048),
    "EleutherAI/pythia-410m": ModelShape(405_334_016, 24, 1024, 50304, 2048),
    "EleutherAI/pythia-1.4b": ModelShape(1_414_647_808, 24, 2048, 50304, 2048),
    "Qwen/Qwen2.5-0.5B": ModelShape(494_032_768, 24, 896, 151936, 32768),
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": ModelShape(
        1_100_048_384, 22, 2048, 32000, 2048
    ),
}
for _id in list(KNOWN_SHAPES):  # the short aliases resolve to the same repositories
    KNOWN_SHAPES.setdefault(_id.split("/")[-1], KNOWN_SHAPES[_id])


def gpt2_params(
    n_layer: int, d: int, vocab: int, n_positions: int, inner: int | None = None
) -> int:
    """Parameters of a GPT-2 with tied embeddings (biases and norms included); MLP width
    ``inner`` (default 4d)."""
    inner = inner or 4 * d
    # attention 4d^2 + 4d, MLP 2*d*inner + inner + d, two norms 4d
    block = 4 * d * d + 4 * d + 2 * d * inner + inner + d + 4 * d
    return vocab * d + n_positions * d + n_layer * block + 2 * d


def _from_hf_config(c: Mapping[str, Any]) -> ModelShape | None:
    """A shape from a transformers config.json: exact for GPT-2; for GPT-NeoX, Llama and Qwen
    key names the weight matrices only (norms and biases are a fraction of a percent)."""
    d = c.get("n_embd") or c.get("hidden_size") or c.get("d_model")
    n_layer = c.get("n_layer") or c.get("num_hidden_layers")
    vocab = c.get("vocab_size")
    if not (d and n_layer and vocab):
        return None
    n_pos = c.get("n_positions") or c.get("max_position_embeddings") or 1024
    inner = c.get("n_inner") or c.get("intermediate_size") or 4 * d
    if c.get("model_type") == "gpt2":
        n_params = gpt2_params(n_layer, d, vocab, n_pos, inner)
    else:
        gated = c.get("model_type") in {"llama", "qwen2", "mistral", "gemma", "qwen3"}
        mlp = (3 if gated else 2) * d * inner
        tied = c.get("tie_word_embeddings", False)
        n_params = vocab * d * (1 if tied else 2) + n_layer * (4 * d * d + mlp)
    return ModelShape(int(n_params), int(n_layer), int(d), int(vocab), int(n_pos))


def _hf_cache_config(source: str, revision: str | None) -> Mapping[str, Any] | None:
    """The hub config from the local cache only (never a download at DAG-building time)."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source, "config.json", revision=revision, local_files_only=True)
        return json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - any miss just means "not cached"
        return None


def model_shape(model_cfg: Any) -> ModelShape:
    """The shape of the model a config names (see the module docstring for the order)."""
    shape = _get(model_cfg, "shape")
    if shape:
        return ModelShape(**{k: int(v) for k, v in dict(shape).items()})
    embedded = _get(model_cfg, "embedded")
    source = str(_get(model_cfg, "source"))
    if embedded and source == "embedded":
        n_layer, d = int(embedded["n_layer"]), int(embedded["n_embd"])
        n_pos = int(embedded.get("seq_len", 64))
        return ModelShape(gpt2_params(n_layer, d, EMBEDDED_VOCAB, n_pos), n_layer, d,
                          EMBEDDED_VOCAB, n_pos)  # fmt: skip
    local = Path(source) / "config.json"
    raw = json.loads(local.read_text()) if local.is_file() else None
    raw = raw or _hf_cache_config(source, _get(model_cfg, "revision"))
    found = _from_hf_config(raw) if raw else None
    if found is None:
        found = KNOWN_SHAPES.get(source)
    if found is None:
        raise LensLabError(
            f"cannot tell the size of model {source!r} (not a local directory, not in the "
            "Hugging Face cache, not a known hub model), so its jobs' resources are unknown",
            fix="add `shape: {n_params: ..., n_layer: ..., d_model: ..., vocab: ...}` to the "
            "model config, or download the model once so its config.json is cached",
        )
    return found


def estimate_tokens(text: str) -> int:
    """An upper bound on a prompt's token count without a tokenizer: BPE tokens of English
    average about four characters, so two characters per token (plus BOS) is generous."""
    return len(text) // 2 + 2


def _prompts(prompts_cfg: Any) -> list[Any]:
    return list(_get(prompts_cfg, "prompts", []) or []) if prompts_cfg is not None else []


def gpus(model_cfg: Any) -> int:
    """GPUs a job of this model needs: ``gpus`` when set, else 1 on CUDA and 0 on CPU."""
    explicit = _get(model_cfg, "gpus")
    if explicit is not None:
        return int(explicit)
    return 1 if str(_get(model_cfg, "device", "cpu")).startswith("cuda") else 0


@dataclass(frozen=True)
class JobSize:
    """The size of one job's work: prompts it holds, their longest length, batch sizes."""

    n_prompts: int
    seq_len: int
    batch_size: int = 8
    n_pairs: int = 0


def job_size(model_cfg: Any, prompts_cfg: Any = None, n_prompts: int | None = None) -> JobSize:
    """A job's size from its prompt set; ``n_prompts`` (a shard's prompts, or its patching
    cases) overrides the set's counts."""
    prompts = _prompts(prompts_cfg)
    shape = model_shape(model_cfg)
    lengths = [estimate_tokens(str(_get(p, "text", ""))) for p in prompts] or [32]
    seq = min(max(lengths), shape.n_positions)
    pairs = len(_get(prompts_cfg, "pairs", []) or []) if prompts_cfg is not None else 0
    count = len(prompts) if n_prompts is None else n_prompts
    if n_prompts is not None and pairs:
        pairs = min(pairs, n_prompts)  # a patching shard: its share of the cases
    return JobSize(count, seq, int(_get(model_cfg, "batch_size", 8) or 8), pairs)


def memory_bytes(kind: str, shape: ModelShape, dtype: str, size: JobSize, settings: Any = None
                 ) -> float:  # fmt: skip
    """Peak host memory of one job before the safety factor (see ``resources``)."""
    if kind not in KINDS:
        raise LensLabError(f"unknown job kind {kind!r}", fix=f"use one of {KINDS}")
    if kind == "light":
        return LIGHT_MB * MB
    b = DTYPE_BYTES.get(dtype, 4)
    weights = shape.n_params * b
    f32 = 4
    T, L, d, V = size.seq_len, shape.n_layer, shape.d_model, shape.vocab
    states = (L + 1) * T * d * f32  # one prompt's residual stream, float32 on disk and in memory
    batch_forward = size.batch_size * T * (4 * (L + 1) * d + 2 * V) * max(b, f32)
    if kind == "train_embedded":
        # weights, gradients and two Adam moments in float32, plus a training batch
        return BASE_MB * MB + 4 * shape.n_params * f32 + 32 * T * (16 * L * d + 2 * V) * f32
    if kind == "extract":
        # every prompt's states are kept until the file is written (once more while saving)
        return BASE_MB * MB + weights + batch_forward + 2 * size.n_prompts * states
    if kind == "lens":
        chunk_layers = int(_get(settings, "chunk_layers", 4) or 4)
        chunk_positions = int(_get(settings, "chunk_positions", 512) or 512)
        chunk = chunk_layers * min(T, chunk_positions) * V * f32
        references = 3 * T * V * f32  # final probabilities and log-probabilities, input probs
        return BASE_MB * MB + weights + size.n_prompts * states + 8 * chunk + references
    if kind == "patching":
        patch_batch = int(_get(settings, "batch_size", 64) or 64)
        cached = 3 * (L + 1) * T * d * f32 * 2  # clean and corrupt states of every kind
        stacked = patch_batch * T * (4 * d + 2 * V) * max(b, f32)
        return BASE_MB * MB + weights + cached + stacked
    if kind == "train_tuned":
        translators = L * (d * d + d) * f32 * 4  # parameters, gradients, two Adam moments
        return BASE_MB * MB + weights + translators + 2 * batch_forward
    return BASE_MB * MB + weights + batch_forward + size.n_prompts * states  # forward


def flops(kind: str, shape: ModelShape, size: JobSize, settings: Any = None) -> float:
    """Floating-point operations of one job (2 per parameter per token for a forward pass)."""
    tokens = size.n_prompts * size.seq_len
    forward = 2.0 * shape.n_params * tokens
    if kind == "lens":
        return forward + 2.0 * (shape.n_layer + 1) * shape.d_model * shape.vocab * tokens
    if kind == "patching":
        kinds = list(_get(settings, "kinds", ["resid", "attn", "mlp"]) or ["resid"])
        # resid restores one layer; attn and mlp a single layer and a window (two sweeps)
        sweeps = sum(1 if k == "resid" else 2 for k in kinds)
        cases = size.n_pairs or size.n_prompts
        samples = int(_get(settings, "noise_samples", 10) or 10) if size.n_pairs == 0 else 1
        cells = sweeps * shape.n_layer * size.seq_len * samples
        # each patched run recomputes the blocks above the patch: half the model on average
        return shape.n_params * size.seq_len * cells * cases
    if kind in ("train_tuned", "train_embedded"):
        steps = int(_get(settings, "steps", 2000) or 2000)
        return 6.0 * shape.n_params * steps * 32 * size.seq_len
    return forward


def resources(
    kind: str,
    model_cfg: Any = None,
    prompts_cfg: Any = None,
    settings: Any = None,
    n_prompts: int | None = None,
    attempt: int = 1,
) -> dict[str, int]:
    """``mem_mb``, ``runtime`` (minutes) and ``gpu`` (count) of one job of a rule of ``kind``.

    ``kind``: extract | lens | patching | forward (any rule that loads the model and runs the
    prompt set) | train_tuned | train_embedded | light (tables, figures, the report).
    ``n_prompts``: the prompts of one shard when the set is split. ``attempt``: Snakemake's
    retry counter; memory and time grow with it.
    """
    if kind == "light" or model_cfg is None:
        return {"mem_mb": LIGHT_MB * attempt, "runtime": LIGHT_RUNTIME * attempt, "gpu": 0}
    shape = model_shape(model_cfg)
    size = job_size(model_cfg, prompts_cfg, n_prompts)
    dtype = str(_get(model_cfg, "dtype", "float32"))
    mem = memory_bytes(kind, shape, dtype, size, settings) * SAFETY * attempt
    n_gpu = gpus(model_cfg)
    rate = GPU_FLOPS if n_gpu else CPU_FLOPS
    seconds = flops(kind, shape, size, settings) / rate + shape.n_params * 4 / LOAD_BYTES_PER_S
    minutes = max(MIN_RUNTIME, math.ceil(SAFETY * seconds / 60)) * attempt
    return {"mem_mb": int(math.ceil(mem / MB / 100) * 100), "runtime": int(minutes), "gpu": n_gpu}


def threads(
    kind: str,
    model_cfg: Any = None,
    prompts_cfg: Any = None,
    settings: Any = None,
    n_prompts: int | None = None,
) -> int:
    """Scheduler cores (Snakemake ``threads``) of one job: 1 when its compute is estimated under
    ``START_UP_BOUND_S`` on CPU (the embedded model's jobs), else the torch threads every job
    uses (:func:`lenslab.runtime.compute_threads`; it fixes the bytes, whatever this says)."""
    if kind == "light" or model_cfg is None:
        return 1
    shape = model_shape(model_cfg)
    size = job_size(model_cfg, prompts_cfg, n_prompts)
    if not gpus(model_cfg) and flops(kind, shape, size, settings) / CPU_FLOPS < START_UP_BOUND_S:
        return 1
    return compute_threads()


def rule_threads(kind: str, job: Callable[[Any], dict[str, Any]]) -> Callable:
    """Snakemake ``threads:`` for a rule: a callable of the job's wildcards (see
    :func:`rule_resources` for ``job``)."""
    return lambda wildcards: threads(kind, **job(wildcards))


def rule_resources(kind: str, job: Callable[[Any], dict[str, Any]]) -> dict[str, Callable]:
    """Snakemake ``resources:`` keywords for a rule: ``job(wildcards)`` returns the keyword
    arguments of :func:`resources` (model_cfg, prompts_cfg, ...) for one job. Each value is a
    callable of (wildcards, attempt), which Snakemake evaluates per job and per retry."""

    def one(key: str) -> Callable:
        return lambda wildcards, attempt: resources(kind, attempt=attempt, **job(wildcards))[key]

    return {key: one(key) for key in ("mem_mb", "runtime", "gpu")}
