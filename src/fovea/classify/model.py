"""The classifier graph shared by training, in-process prediction and every export.

`ClassifierPipeline` is the task layer's `TaskPipeline` for classification: uint8 (B, H, W, 3) ->
resize to the input size (bilinear, antialiased) -> ImageNet normalisation -> a timm backbone with
a new head. `pipe(images)` gives logits (B, C) (the training graph); its post-process is the
softmax, so predictors and TorchScript/ONNX exports answer with probabilities (B, C).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fovea.models  # noqa: F401  (registers fovea's own backbones, vmamba_* / sparx_*, in timm)
from fovea.engine.checkpoint import load_checkpoint, save_checkpoint
from fovea.engine.pipeline import TaskPipeline
from fovea.errors import CheckpointError
from fovea.weights import create_backbone


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


class ClassifierPipeline(TaskPipeline):
    """uint8 images (B, H, W, 3) -> logits (B, C); post-processed: probabilities (B, C).

    With `recipe.linear_probe` only the head trains, and the frozen backbone runs in eval mode.
    """

    task = "classify"
    output_names = ("probs",)
    __jit_unused_properties__ = ["backbone"]

    def __init__(self, backbone: nn.Module, recipe: "ClassifierRecipe"):
        super().__init__(backbone, recipe.input_size, channels_last=True)
        self.recipe = recipe
        self.linear_probe = bool(recipe.linear_probe)
        if self.linear_probe:
            head = set(id(p) for p in backbone.get_classifier().parameters())
            for p in backbone.parameters():
                p.requires_grad_(id(p) in head)

    @property
    def backbone(self) -> nn.Module:
        return self.network

    def _freeze_backbone_modes(self) -> None:
        """A linear probe runs the frozen backbone in eval mode (batch-norm statistics fixed, no dropout).

        Done at forward time because trainers may set each submodule's mode directly.
        """
        self.network.eval()
        self.network.get_classifier().train(self.training)

    @torch.jit.unused
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The training graph: uint8 (B, H, W, 3) -> logits (B, C)."""
        if self.linear_probe and self.training and self.network.training:
            self._freeze_backbone_modes()
        return self.raw(images)

    def postprocess(self, outputs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=1)

    def config(self) -> dict[str, Any]:
        return self.recipe.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ClassifierPipeline":
        return build_classifier(ClassifierRecipe.from_dict(config), weights="random")


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
    return ClassifierPipeline(backbone, recipe)


def save_classifier(pipeline: ClassifierPipeline, recipe: ClassifierRecipe | None, out_dir: str | Path,
                    info: dict | None = None) -> Path:
    """Write the checkpoint folder (`recipe.json` + `model.safetensors`); returns it.

    recipe: must be the pipeline's own (kept in the signature for callers that pass it).
    """
    if recipe is not None and recipe.to_dict() != pipeline.recipe.to_dict():
        raise CheckpointError(f"save_classifier: recipe {recipe.to_dict()} is not the pipeline's "
                              f"{pipeline.recipe.to_dict()}. Fix: pass the recipe the pipeline was built from.")
    return save_checkpoint(pipeline, out_dir, info)


def load_classifier(path: str | Path) -> tuple[ClassifierPipeline, ClassifierRecipe]:
    """A checkpoint folder (current layout or the older classifier.json + best.safetensors) or a file in one."""
    pipeline, _ = load_checkpoint(path, ClassifierPipeline)
    return pipeline, pipeline.recipe
