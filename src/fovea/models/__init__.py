"""Backbones registered into timm on import (VMamba, SparX-Mamba, SparX-Swin) and the one
`load_official` that reads the authors' checkpoints of any of them."""

from fovea.models import cloformer, sparx, sparx_swin, vmamba  # noqa: F401  (importing registers the timm entrypoints)
from fovea.models._checkpoint import load_official

__all__ = ["load_official"]
