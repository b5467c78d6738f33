"""The logit lens (nostalgebraist 2020): decode every residual state as if it were the last."""

from __future__ import annotations

from torch import Tensor

from lenslab.lenses.base import Lens


class LogitLens(Lens):
    """Identity transform. ``affine=False`` is the 2020 post's "normalised, before the learned
    point-wise transformation"; the default applies the full final norm, as his 2021 code does."""

    def transform(self, h: Tensor, layer: int) -> Tensor:
        return h

    @property
    def name(self) -> str:  # type: ignore[override]
        return "logit" if self.affine else "logit_noaffine"
