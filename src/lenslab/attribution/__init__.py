"""Attribution of the model's output to its components (F10 direct logit attribution)."""

from lenslab.attribution.dla import direct_logit_attribution

__all__ = ["direct_logit_attribution"]
