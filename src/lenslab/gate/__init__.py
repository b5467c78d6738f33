"""The fidelity gate: above the methods whose identities it checks, below the readouts.

:func:`load_model` loads a model (:func:`lenslab.models.load.load_model`) and checks it;
:func:`check` checks an adapter built by hand. Importing this package registers the gate with
:class:`~lenslab.models.adapter.ModelAdapter`, so a method's ``adapter.require(...)`` runs it on
first use: the models layer never imports the methods the gate exercises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lenslab.gate.fidelity import FidelityReport, run_gate
from lenslab.models.adapter import ModelAdapter
from lenslab.models.load import load_model as _load_unchecked

ModelAdapter.register_gate(run_gate)

__all__ = ["FidelityReport", "check", "load_model"]


def check(adapter: ModelAdapter) -> FidelityReport:
    """The adapter's fidelity report (run once, then kept); raises when ``lens_final`` fails."""
    return adapter.fidelity


def load_model(cfg: Any, path: str | Path | None = None) -> ModelAdapter:
    """Load the model a config names and run the gate on it: a wrong map fails here, and a
    method it rules out is refused later with the gate's reason."""
    adapter = _load_unchecked(cfg, path)
    check(adapter)
    return adapter
