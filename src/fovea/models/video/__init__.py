"""Video models, one family per file: C3D, I3D (+ ImageNet inflation), R(2+1)D, TSN, TSM (offline
and online), SlowFast, Non-local blocks, TimeSformer. Inputs are clips (B, C, T, H, W) unless a
model says otherwise (TSN/TSM take the same layout and fold T into the batch)."""

from fovea.models.video import c3d, i3d, non_local, r2plus1d, slowfast, timesformer, tsm, tsn  # noqa: F401
from fovea.models.video._registry import create_model, list_models, register_video_model

__all__ = ["create_model", "list_models", "register_video_model"]
