"""The single lens interface behind which logit, tuned and attribute lenses are interchangeable.

A lens maps the residual state ``resid[layer]`` (shape ``[..., D]``) into the output basis with
:meth:`Lens.transform`, then the model's own decoder (final norm + unembedding) turns it into
logits. Statistics and figure code only ever call :meth:`Lens.logits`, so a new lens drops in by
subclassing and overriding ``transform``.
"""

from __future__ import annotations

from torch import Tensor, nn

from lenslab.models.adapter import ModelAdapter


class Lens(nn.Module):
    """Base lens. Subclasses set ``name`` and override :meth:`transform`."""

    name: str = "lens"

    def __init__(self, adapter: ModelAdapter, affine: bool = True):
        super().__init__()
        # Kept outside nn.Module registration: a lens's state dict holds only its own weights.
        object.__setattr__(self, "adapter", adapter)
        self.affine = affine

    @property
    def description(self) -> str:
        """One line for captions: what the lens does and which norm convention it decodes with."""
        norm = "full final norm (with its affine)" if self.affine else "final norm without affine"
        return f"{self.name} lens, decoded with the {norm}"

    def transform(self, h: Tensor, layer: int) -> Tensor:
        """Map ``resid[layer]`` into the output basis (identity for the logit lens)."""
        raise NotImplementedError

    def logits(self, h: Tensor, layer: int) -> Tensor:
        """Lens logits ``[..., V]`` for the residual state ``h`` at ``layer`` (0..L)."""
        return self.adapter.decode(self.transform(h, layer), affine=self.affine)

    def forward(self, h: Tensor, layer: int) -> Tensor:
        return self.logits(h, layer)
