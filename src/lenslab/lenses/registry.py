"""Build a lens by name (configs and rules say ``lenses: [logit, tuned]``). The names, captions
and fitted files are in the torch-free :mod:`lenslab.lenses.catalog`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lenslab.errors import LensLabError
from lenslab.lenses.catalog import ATTRIBUTE_PREFIX, lens_spec

if TYPE_CHECKING:
    from lenslab.lenses.base import Lens
    from lenslab.models.adapter import ModelAdapter

__all__ = ["build_lens"]


def build_lens(name: str, adapter: ModelAdapter, lens_dir: str | Path | None = None) -> Lens:
    """The lens called ``name`` on ``adapter``; a fitted lens reads its file (the catalogue's
    ``fitted``) from ``lens_dir``. Lens modules are imported only when built (torch)."""
    spec = lens_spec(name)  # an unknown name fails here, listing the known ones
    if spec.fitted is not None and lens_dir is None:
        raise LensLabError(
            f"the {name} lens needs its fitted parameters ({Path(spec.fitted).name})",
            fix=f"pass lens_dir (the directory of results/<study>/{spec.fitted})",
        )
    if name in ("logit", "logit_noaffine"):
        from lenslab.lenses.logit import LogitLens

        return LogitLens(adapter, affine=name == "logit")
    if name == "tuned":
        from lenslab.lenses.tuned import TunedLens

        return TunedLens.load(lens_dir, adapter)
    if name == "jacobian":
        from lenslab.lenses.jacobian import JacobianLens

        return JacobianLens.load(Path(lens_dir) / Path(spec.fitted).name, adapter)
    from lenslab.lenses.attribute import load_attribute_lens  # attribute.<relation>

    relation = name[len(ATTRIBUTE_PREFIX) :]
    return load_attribute_lens(Path(lens_dir) / Path(spec.fitted).name, adapter, relation)
