"""Measuring generated clips: prompt adherence read back by the generator's own tracker (colour, object,
direction of a frame window vs its caption), CSCV transition smoothness on fovea image embeddings (offline
ImageNet EfficientNet-Lite0, global-pooled), and the seeded prompt pairs of the multi-prompt benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fovea.nn.ditctrl import cscv
from fovea.synth.moving_objects import COLOURS, DIRECTIONS, OBJECTS, parse_caption, read_clip
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD, create_backbone


@dataclass(frozen=True)
class Adherence:
    """Whether a frame window shows its caption's colour, object and direction (read back, not predicted)."""

    colour: bool
    object: bool
    direction: bool

    @property
    def all(self) -> bool:
        return self.colour and self.object and self.direction


def adherence(frames: np.ndarray, caption: str) -> Adherence:
    """Read back frames (T, H, W, 3) uint8 and compare with the caption's words."""
    colour, obj, direction = parse_caption(caption)
    r = read_clip(frames)
    return Adherence(r.colour == colour, r.object == obj, r.direction == direction)


def prompt_pairs(n: int, seed: int) -> list[tuple[str, str, str]]:
    """n (caption A, caption B, what changes) pairs, the change cycling colour, direction, object; the rest of
    A is drawn at random, B differs from A in exactly that attribute."""
    rng = np.random.default_rng(seed)
    kinds = ("colour", "direction", "object")
    out = []
    for i in range(n):
        colour, obj, d = (str(rng.choice(list(COLOURS))), str(rng.choice(OBJECTS)), str(rng.choice(list(DIRECTIONS))))
        kind = kinds[i % 3]
        c2, o2, d2 = colour, obj, d
        if kind == "colour":
            c2 = str(rng.choice([c for c in COLOURS if c != colour]))
        elif kind == "direction":
            d2 = str(rng.choice([x for x in DIRECTIONS if x != d]))
        else:
            o2 = next(o for o in OBJECTS if o != obj)
        out.append((f"a {colour} {obj} moves {d}", f"a {c2} {o2} moves {d2}", kind))
    return out


class FrameEmbedder:
    """fovea image embeddings of frames: ImageNet EfficientNet-Lite0 (offline weights), global average pool,
    frames resized (bilinear) to `size` and normalised with the ImageNet mean/std."""

    def __init__(self, size: int = 224, backbone: str = "efficientnet_lite0"):
        import fovea.models  # noqa: F401  (registers fovea's own backbones in timm before create_backbone)

        self.size = size
        self.net = create_backbone(backbone, weights="default", num_classes=0).eval()
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray | torch.Tensor, batch: int = 32) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, D) features."""
        x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
        out = []
        for i in range(0, len(x), batch):
            xb = F.interpolate(x[i:i + batch], size=(self.size, self.size), mode="bilinear", align_corners=False)
            out.append(self.net((xb - self.mean) / self.std))
        return torch.cat(out)


def clip_cscv(embedder: FrameEmbedder, frames: np.ndarray | torch.Tensor) -> float:
    """CSCV of one clip (T, H, W, 3) uint8 on fovea image embeddings."""
    return cscv(embedder(frames))
