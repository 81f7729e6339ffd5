"""Tiny variants of each family for fast forward/backward tests (same code paths, small widths)."""

import dataclasses

from fovea.models.sparx import SPARX_CONFIGS
from fovea.models.vmamba import VMAMBA_CONFIGS

TINY_VMAMBA = dataclasses.replace(VMAMBA_CONFIGS["vmamba_tiny_s1l8"], depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))
TINY_VMAMBA_V0 = dataclasses.replace(
    VMAMBA_CONFIGS["vmamba_tiny_v0"], depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), d_state=4
)
# ganglions in stages 2-4 (stage 3: S=2 -> [0, 2]); d_inner 2*C exercises the channel padding
TINY_SPARX = dataclasses.replace(
    SPARX_CONFIGS["sparx_mamba_t"], depths=(1, 2, 3, 2), dims=(8, 16, 20, 28), drop_path_rate=0.0
)
