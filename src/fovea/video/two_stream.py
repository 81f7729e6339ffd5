"""Two-stream recognition (Simonyan & Zisserman 2014; TSN's flow stream): optical flow between
consecutive frames (TV-L1 from OpenCV contrib, Farneback as the fast option), quantised as
MMAction2's extraction tool does (components clipped to +-20 px, mapped to 0..255), stacked over
L frame pairs into a 2L-channel input, and late fusion of the RGB and flow streams' scores.
The flow network's first convolution gets TSN's cross-modality initialisation
(`fovea.models.video.tsn.cross_modality_conv`: the RGB kernel averaged over its channels).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from fovea.errors import ConfigError

FLOW_METHODS = ("tvl1", "farneback")
FLOW_BOUND_PX = 20.0


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def optical_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """Dense flow (H, W, 2) float32 in pixels (dx, dy) from `prev` to `nxt` (RGB or grey uint8)."""
    a, b = _gray(prev), _gray(nxt)
    if method == "tvl1":
        if not hasattr(cv2, "optflow"):
            raise ConfigError("TV-L1 needs opencv-contrib-python(-headless) (cv2.optflow). Fix: install it, or "
                              "use method='farneback'")
        return cv2.optflow.DualTVL1OpticalFlow_create().calc(a, b, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ConfigError(f"unknown flow method {method!r}; use one of {FLOW_METHODS}")


def quantize_flow(flow: np.ndarray, bound_px: float = FLOW_BOUND_PX) -> np.ndarray:
    """(H, W, 2) float flow -> (H, W, 2) uint8: clip to +-bound, map linearly to 0..255 (128 = no motion)."""
    q = (np.clip(flow, -bound_px, bound_px) + bound_px) * (255.0 / (2 * bound_px))
    return np.round(q).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound_px: float = FLOW_BOUND_PX) -> np.ndarray:
    return q.astype(np.float32) * (2 * bound_px / 255.0) - bound_px


def stacked_flow(frames: np.ndarray, start: int, length: int = 5, method: str = "tvl1") -> np.ndarray:
    """Flow of `length` consecutive pairs from frame `start`, stacked as (2L, H, W) uint8 (x1, y1, x2, y2, ...)."""
    if start < 0 or start + length >= len(frames):
        raise ConfigError(f"stacked_flow: frames {start}..{start + length} are outside the clip of {len(frames)}")
    chans = []
    for k in range(start, start + length):
        q = quantize_flow(optical_flow(frames[k], frames[k + 1], method))
        chans += [q[..., 0], q[..., 1]]
    return np.stack(chans)


class LateFusion(nn.Module):
    """Weighted sum of the streams' scores (MMAction2 fuses RGB and flow 1:1 without softmax)."""

    def __init__(self, rgb: nn.Module, flow: nn.Module, weights: tuple[float, float] = (1.0, 1.0)):
        super().__init__()
        self.rgb, self.flow, self.weights = rgb, flow, weights

    def forward(self, rgb_clip: torch.Tensor, flow_clip: torch.Tensor) -> torch.Tensor:
        """rgb_clip (B, 3, T, H, W), flow_clip (B, 2L, T, H, W) -> (B, K)."""
        return self.weights[0] * self.rgb(rgb_clip) + self.weights[1] * self.flow(flow_clip)
