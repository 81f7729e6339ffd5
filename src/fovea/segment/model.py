"""Segmentation network (a torchvision LRASPP or DeepLabV3 head on fovea backbone features) and the
task layer's pipeline for it.

`SegmentationPipeline(images uint8 (B, H, W, 3))` resizes to the input size, normalises (ImageNet)
and runs the network: logits (B, C, h, w), the training graph. Its post-process upsamples the
logits back to (H, W) and applies a softmax, so predictors and TorchScript/ONNX exports answer
with probabilities (B, C, H, W). Checkpoints and exports are the task layer's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.lraspp import LRASPPHead

import fovea.models  # noqa: F401  (registers fovea's own backbones, vmamba_* / sparx_*, in timm)
from fovea.engine.checkpoint import load_checkpoint, save_checkpoint
from fovea.engine.pipeline import TaskPipeline
from fovea.errors import ConfigError
from fovea.weights import create_backbone


@dataclass
class SegModelConfig:
    """num_classes including background; low/high_index are timm feature indices of the backbone."""

    num_classes: int
    class_names: tuple[str, ...] = ()
    backbone: str = "efficientnet_lite0"
    weights: str | None = "default"
    head: str = "lraspp"                  # "lraspp" | "deeplabv3"
    low_index: int = 1                    # stride 4 on efficientnet_lite0 (LRASPP low branch)
    high_index: int = 3                   # stride 16 on efficientnet_lite0
    inter_channels: int = 128
    input_size: tuple[int, int] = (256, 256)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2 (background + one class), got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(f"{len(self.class_names)} class names {list(self.class_names)} for "
                              f"num_classes={self.num_classes}. Fix: give one name per class.")
        if self.head not in ("lraspp", "deeplabv3"):
            raise ConfigError(f"unknown segmentation head {self.head!r}. Fix: use lraspp or deeplabv3.")
        self.class_names = tuple(self.class_names) or tuple(str(i) for i in range(self.num_classes))
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["input_size"] = list(self.input_size)
        return d


class SegmentationModel(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> logits (B, num_classes, H, W)."""

    def __init__(self, config: SegModelConfig):
        super().__init__()
        self.config = config
        indices = (config.low_index, config.high_index) if config.head == "lraspp" else (config.high_index,)
        self.backbone = create_backbone(config.backbone, weights=config.weights, features_only=True,
                                        out_indices=indices)
        self.weights_source = getattr(self.backbone, "fovea_weights", None)
        ch = list(self.backbone.feature_info.channels())
        if config.head == "lraspp":
            self.head = LRASPPHead(ch[0], ch[1], config.num_classes, config.inter_channels)
        else:
            self.head = DeepLabHead(ch[0], config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.config.head == "lraspp":
            out = self.head({"low": feats[0], "high": feats[1]})
        else:
            out = self.head(feats[0])
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SegmentationPipeline(TaskPipeline):
    """uint8 images (B, H, W, 3) -> logits (B, C, h, w); post-processed: probabilities (B, C, H, W)."""

    task = "segment"
    output_names = ("probs",)
    __jit_unused_properties__ = ["model"]

    def __init__(self, model: SegmentationModel):
        super().__init__(model, model.config.input_size)

    @property
    def model(self) -> SegmentationModel:
        return self.network

    def postprocess(self, outputs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        logits = F.interpolate(outputs, size=[height, width], mode="bilinear", align_corners=False)
        return torch.softmax(logits, dim=1)

    def config(self) -> dict[str, Any]:
        return self.network.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SegmentationPipeline":
        return cls(SegmentationModel(SegModelConfig(**dict(config, weights="random"))))

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Checkpoint folder `recipe.json` + `model.safetensors` (extra: provenance stored as `info`)."""
        return save_checkpoint(self, out_dir, extra)

    @classmethod
    def load(cls, path: str | Path) -> "SegmentationPipeline":
        """A segmentation checkpoint folder, current or legacy (`config.json` + `model.safetensors`) layout."""
        return load_checkpoint(path, cls)[0]
