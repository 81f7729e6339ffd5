"""Clip transforms on (C, T, H, W) tensors (and `frames_to_clip` from decoded (T, H, W, 3) uint8).

Spatial ops act on every frame alike (one crop box per clip), so motion is preserved.
`three_crop` gives the multi-crop test views; `normalize` takes per-channel mean/std in the
clip's value range (0-255 for uint8-derived clips).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fovea.errors import ConfigError

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


def frames_to_clip(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (3, T, H, W) float32 in 0..255."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"frames must be (T, H, W, 3), got {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()


def _check_clip(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ConfigError(f"clip transforms take (C, T, H, W) tensors, got shape {tuple(x.shape)}")


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize so min(H, W) == size, aspect kept. (C, T, H, W) -> (C, T, H', W')."""
    _check_clip(x)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    out_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    if out_hw == (h, w):
        return x
    y = F.interpolate(x.transpose(0, 1), size=out_hw, mode="bilinear", align_corners=False, antialias=scale < 1)
    return y.transpose(0, 1)


def crop(x: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    _check_clip(x)
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ConfigError(f"crop size {size} exceeds the clip's {h}x{w}; resize first")
    return x[..., top:top + size, left:left + size]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return crop(x, (h - size) // 2, (w - size) // 2, size)


def random_crop(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    h, w = x.shape[-2:]
    return crop(x, int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)), size)


def three_crop(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Three size x size crops along the long side (start, centre, end) - the 3-crop test views."""
    h, w = x.shape[-2:]
    if w >= h:
        return [crop(x, (h - size) // 2, left, size) for left in (0, (w - size) // 2, w - size)]
    return [crop(x, top, (w - size) // 2, size) for top in (0, (h - size) // 2, h - size)]


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right: (C, T, H, W) -> same shape."""
    return x.flip(-1)


def vflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror top-bottom (a belt seen from its other side; keeps the travel direction): (C, T, H, W)."""
    return x.flip(-2)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN_255, std=IMAGENET_STD_255) -> torch.Tensor:
    _check_clip(x)
    if len(mean) != x.shape[0] or len(std) != x.shape[0]:
        raise ConfigError(f"normalize: {len(mean)} means / {len(std)} stds for {x.shape[0]} channels")
    m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1, 1)
    return (x - m) / s
