"""Segmentation network (a torchvision LRASPP or DeepLabV3 head on fovea backbone features) and the
one pipeline that runs in-process and inside every export.

`SegmentationPipeline.forward(images uint8 (B, H, W, 3)) -> probs (B, C, H, W)`: resize to the
input size, ImageNet normalisation, the network, upsampling of the logits back to (H, W) and a
softmax. TorchScript and ONNX exports are this module, so exported models answer as trained ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.lraspp import LRASPPHead

import fovea.models  # noqa: F401  (registers fovea's own backbones, vmamba_* / sparx_*, in timm)
from fovea.errors import CheckpointError, ConfigError
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD, create_backbone

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "fovea.segment/1"


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


class SegmentationPipeline(nn.Module):
    """uint8 images (B, H, W, 3) -> class probabilities (B, C, H, W) at the images' own size."""

    __jit_unused_properties__ = ["config"]

    def __init__(self, model: SegmentationModel):
        super().__init__()
        self.model = model
        self.input_h, self.input_w = model.config.input_size
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    @property
    def config(self) -> SegModelConfig:
        return self.model.config

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, h, w): antialiased bilinear resize + normalisation.

        Same arithmetic as `fovea.segment.data.preprocess_images` (the training path).
        """
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=[self.input_h, self.input_w], mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def postprocess(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        logits = F.interpolate(logits, size=[height, width], mode="bilinear", align_corners=False)
        return torch.softmax(logits, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.preprocess(images))
        return self.postprocess(logits, images.shape[1], images.shape[2])

    # --- checkpoints: safetensors for tensors, JSON for the recipe; nothing is pickled ------------
    def recipe(self) -> dict[str, Any]:
        return {"format": FORMAT, "model_config": self.config.to_dict()}

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(out / WEIGHTS_FILE))
        recipe = self.recipe()
        if extra:
            recipe["info"] = extra
        (out / CONFIG_FILE).write_text(json.dumps(recipe, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> "SegmentationPipeline":
        from safetensors.torch import load_file

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        cfg_file, w_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_file.is_file() or not w_file.is_file():
            raise CheckpointError(f"{folder} is not a fovea segmentation checkpoint (needs {CONFIG_FILE} and "
                                  f"{WEIGHTS_FILE}). Fix: pass the folder written by `fovea segment train`.")
        try:
            recipe = json.loads(cfg_file.read_text())
            state = load_file(str(w_file))
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {folder}: {exc}") from exc
        if recipe.get("format") != FORMAT:
            raise CheckpointError(f"{cfg_file}: format {recipe.get('format')!r} is not {FORMAT!r}. Fix: pass a "
                                  "segmentation checkpoint (anomaly/classification ones have their own commands).")
        cfg = dict(recipe["model_config"], weights="random")  # every tensor comes from the file
        model = SegmentationModel(SegModelConfig(**cfg))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{w_file} does not match its config: {exc}") from exc
        return cls(model).eval()
