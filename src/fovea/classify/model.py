"""The classifier graph shared by training, in-process prediction and every export.

`ClassifierPipeline.forward(images uint8 (B, H, W, 3)) -> logits (B, C)`: resize to the input
size (bilinear, antialiased), ImageNet normalisation, a timm backbone with a new head.
`ClassifierProbs` adds the softmax; it is what `ClassifierPredictor` runs in-process and what
TorchScript/ONNX files contain, so an exported model answers as the trained one does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fovea.models  # noqa: F401  (registers fovea's own backbones, vmamba_* / sparx_*, in timm)
from fovea.errors import CheckpointError
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD, create_backbone

RECIPE_FILE = "classifier.json"
WEIGHTS_FILE = "best.safetensors"


@dataclass
class ClassifierRecipe:
    """What rebuilds a trained classifier: architecture, classes, input size, probe mode."""

    backbone: str = "efficientnet_lite0"
    class_names: list[str] = field(default_factory=list)
    input_size: tuple[int, int] = (224, 224)
    linear_probe: bool = False
    weights: str = "default"  # what the backbone started from (informational once trained)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassifierRecipe":
        d = dict(d)
        d["input_size"] = tuple(int(v) for v in d.get("input_size", (224, 224)))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class ClassifierPipeline(nn.Module):
    """uint8 images (B, H, W, 3) -> logits (B, C). With linear_probe only the head trains."""

    def __init__(self, backbone: nn.Module, input_size: tuple[int, int], linear_probe: bool = False):
        super().__init__()
        self.backbone = backbone
        self.input_h, self.input_w = int(input_size[0]), int(input_size[1])
        self.linear_probe = bool(linear_probe)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        if self.linear_probe:
            head = set(id(p) for p in backbone.get_classifier().parameters())
            for p in backbone.parameters():
                p.requires_grad_(id(p) in head)

    def _freeze_backbone_modes(self) -> None:
        """A linear probe runs the frozen backbone in eval mode (batch-norm statistics fixed, no dropout).

        Done at forward time because trainers may set each submodule's mode directly.
        """
        self.backbone.eval()
        self.backbone.get_classifier().train(self.training)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, h, w): resized (bilinear, antialiased) and normalised."""
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=[self.input_h, self.input_w], mode="bilinear", align_corners=False,
                          antialias=True)
        return ((x - self.pixel_mean) / self.pixel_std).contiguous(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.linear_probe and self.training and self.backbone.training:
            self._freeze_backbone_modes()
        return self.backbone(self.preprocess(images))


class ClassifierProbs(nn.Module):
    """uint8 (B, H, W, 3) -> class probabilities (B, C) float32: the exported graph."""

    def __init__(self, pipeline: ClassifierPipeline):
        super().__init__()
        self.pipeline = pipeline

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.pipeline(images).float(), dim=1)


def build_classifier(recipe: ClassifierRecipe, weights: str | Path | None = None) -> ClassifierPipeline:
    """Backbone `recipe.backbone` from `weights` (default: recipe.weights) with a new C-class head."""
    if len(recipe.class_names) < 2:
        raise CheckpointError(f"a classifier needs >= 2 classes, got {recipe.class_names}.")
    backbone = create_backbone(recipe.backbone, weights=weights if weights is not None else recipe.weights,
                               num_classes=len(recipe.class_names))
    head = backbone.get_classifier()
    if isinstance(head, nn.Linear):  # timm's EfficientNet init gives a 2-class head logits of ~+-40
        nn.init.trunc_normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
    backbone = backbone.to(memory_format=torch.channels_last)
    return ClassifierPipeline(backbone, recipe.input_size, recipe.linear_probe)


def save_classifier(pipeline: ClassifierPipeline, recipe: ClassifierRecipe, out_dir: str | Path) -> Path:
    """Write `out_dir/best.safetensors` + `classifier.json`; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in pipeline.state_dict().items()}, str(out / WEIGHTS_FILE))
    (out / RECIPE_FILE).write_text(json.dumps(recipe.to_dict(), indent=1))
    return out


def load_classifier(path: str | Path) -> tuple[ClassifierPipeline, ClassifierRecipe]:
    """A training folder (classifier.json + best.safetensors) or the .safetensors inside one."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = path if path.suffix == ".safetensors" else folder / WEIGHTS_FILE
    if not (folder / RECIPE_FILE).is_file() or not weights.is_file():
        raise CheckpointError(f"{path} is not a classifier checkpoint (needs {RECIPE_FILE} and {WEIGHTS_FILE}). "
                              "Fix: pass the --out folder of `fovea classify train`.")
    recipe = ClassifierRecipe.from_dict(json.loads((folder / RECIPE_FILE).read_text()))
    pipeline = build_classifier(recipe, weights="random")
    try:
        pipeline.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit {recipe.backbone} with {len(recipe.class_names)} classes: "
                              f"{exc}") from exc
    return pipeline.eval(), recipe
