"""Checks of a model directory's files, torch-free (the study's up-front validation uses them
before any job runs; :mod:`lenslab.models.load` again at load)."""

from __future__ import annotations

from pathlib import Path

from lenslab.errors import LensLabError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def check_tokenizer_files(path: str | Path) -> None:
    """A local model directory must hold tokenizer files; without them transformers builds an
    empty tokenizer and every prompt later "encodes to no tokens"."""
    path = Path(path)
    if path.is_dir() and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise LensLabError(
            f"model directory {path} has no tokenizer files (none of {list(TOKENIZER_FILES)})",
            fix="save the tokenizer next to the weights (tokenizer.save_pretrained(dir)) or "
            "point `source` at a directory or hub id that has one",
        )
