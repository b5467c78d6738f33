"""Training survives interruption (issue 15): the embedded model's training checkpoints into a
sibling directory; an interrupted run (exception, SIGTERM, Ctrl-C under Snakemake) resumes and
writes exactly the bytes of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lenslab.embedded import train as T

# Small but both stages: a 1-block stage (30 steps, never ending early) grown to 2 blocks.
SMALL = {
    "steps": 60,
    "n_layer": 2,
    "stage1_layers": 1,
    "stage1_steps": 30,
    "stage1_copy_target": 0.0,
    "batch_size": 8,
    "warmup_steps": 5,
    "num_threads": 1,
    "eval_copy_items": 20,
}
FILES = ("model.safetensors", "metrics.json", "config.json")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "whole"
    T.train_embedded_model(SMALL, out, progress=False, checkpoint_every=10)
    assert not T.checkpoint_dir(out).exists()  # success removes the checkpoint
    return out


def same_model(a: Path, b: Path) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in FILES)


def test_checkpoint_lives_beside_the_output_directory(tmp_path):
    ckpt = T.checkpoint_dir(tmp_path / "models" / "embedded")
    assert ckpt == tmp_path / "models" / ".embedded.checkpoint"


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [25, 45])  # inside the shallow stage / the grown one
def test_interrupted_training_resumes_to_the_same_bytes(
    uninterrupted, tmp_path, monkeypatch, stop_after
):
    out = tmp_path / "embedded"
    step, calls = T._Run.step, []

    def interrupting(self, *args):
        calls.append(1)
        if len(calls) > stop_after:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a step
        return step(self, *args)

    monkeypatch.setattr(T._Run, "step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        T.train_embedded_model(SMALL, out, progress=False, checkpoint_every=10)
    monkeypatch.setattr(T._Run, "step", step)
    assert not out.exists() and (T.checkpoint_dir(out) / "state.pt").exists()
    T.train_embedded_model(SMALL, out, progress=False, checkpoint_every=10)
    assert same_model(out, uninterrupted)
    assert not T.checkpoint_dir(out).exists()


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    ckpt = T.Checkpoint(tmp_path / ".x.checkpoint", every=10)
    ckpt.save({"settings_hash": "abc", "next_step": 10})
    assert ckpt.load("abc")["next_step"] == 10
    assert ckpt.load("other") is None
    (tmp_path / ".x.checkpoint" / "state.pt").write_bytes(b"damaged")
    assert ckpt.load("abc") is None  # a damaged checkpoint means a fresh start


@pytest.mark.slow
def test_sigterm_during_training_then_rerun_gives_the_same_bytes(uninterrupted, tmp_path):
    out = tmp_path / "embedded"
    code = (
        "import sys; from lenslab.embedded.train import train_embedded_model as t; "
        f"t({SMALL!r}, sys.argv[1], progress=False, checkpoint_every=10)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    state = T.checkpoint_dir(out) / "state.pt"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not out.exists() and state.exists()
    T.train_embedded_model(SMALL, out, progress=False, checkpoint_every=10)
    assert same_model(out, uninterrupted)
