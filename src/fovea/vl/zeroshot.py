"""Zero-shot classification from class descriptions with prompt-template ensembles (open_clip's recipe).

Each class name goes through every template ("a photo of a {}." ...); each prompt's embedding is
L2-normalised, the class's prompts are averaged and the mean re-normalised: a classifier (D, C).
Logits = t x normalised image embedding @ classifier with the model's learned temperature t
(open_clip's evaluation uses a fixed 100, which only sharpens the probabilities: the ranking is the
same, but with 100 nearly every confidence reads 1.000 and a review sorted by uncertainty loses
its meaning); probabilities by softmax. `zero_shot_predictor` wraps it as a fovea classify predictor, so every
classify command (predict, test, the line) can use it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fovea.errors import ConfigError
from fovea.models.vl.two_tower import TwoTower

__all__ = ["INSPECTION_TEMPLATES", "ZeroShotGraph", "build_zero_shot_classifier", "zero_shot_predictor", "zero_shot_probs"]

INSPECTION_TEMPLATES: tuple[str, ...] = (
    "{}", "a photo of a {}.", "a close-up photo of a {}.", "an image of a {}.", "a {} on a conveyor belt.",
    "a picture of the {}.", "a cropped photo of a {}.",
)


def _check_classes(class_prompts: Sequence[str]) -> list[str]:
    names = [str(c) for c in class_prompts]
    if len(names) < 2:
        raise ConfigError(f"zero-shot classification needs >= 2 class descriptions, got {names}. Fix: e.g. "
                          "--zero-shot \"good apple\" \"bruised apple\".")
    empty = [i for i, c in enumerate(names) if not c.strip()]
    if empty:
        raise ConfigError(f"class description(s) at position {empty} are empty ({names}). Fix: describe every class "
                          "in words.")
    if len(set(names)) != len(names):
        raise ConfigError(f"class descriptions repeat: {names}. Fix: give each class its own description.")
    return names


@torch.no_grad()
def build_zero_shot_classifier(model: TwoTower, class_prompts: Sequence[str],
                               templates: Sequence[str] = INSPECTION_TEMPLATES) -> torch.Tensor:
    """(D, C) unit-norm columns: per class, mean of the normalised template embeddings, re-normalised."""
    names = _check_classes(class_prompts)
    if not templates or any("{}" not in t for t in templates):
        raise ConfigError(f"every template must contain '{{}}' for the class text, got {list(templates)}.")
    model.eval()
    prompts = [t.format(c) for c in names for t in templates]
    emb = model.encode_text(prompts).reshape(len(names), len(templates), -1)
    mean = emb.mean(1)
    return (mean / mean.norm(dim=-1, keepdim=True)).T.contiguous()


@torch.no_grad()
def zero_shot_probs(model: TwoTower, classifier: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> (B, C) class probabilities."""
    model.eval()
    return torch.softmax(model.logit() * model.encode_image(images) @ classifier, dim=-1)


class ZeroShotGraph(torch.nn.Module):
    """The deployed zero-shot classifier as one module, uint8 (B, H, W, 3) -> probabilities (B, C): the image
    tower, the fixed (D, C) class matrix and the temperature (a constant); exportable to ONNX/TorchScript."""

    def __init__(self, model: TwoTower, classifier: torch.Tensor):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("classifier", classifier.detach().clone())
        self.register_buffer("scale", model.logit().detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.model.encode_image(images)
        return torch.softmax(self.scale * z @ self.classifier, dim=-1)


def zero_shot_predictor(model: TwoTower, class_prompts: Sequence[str], templates: Sequence[str] = INSPECTION_TEMPLATES,
                        class_names: Sequence[str] | None = None, source: str = "zero-shot"):
    """A `ClassifierPredictor` answering with the zero-shot probabilities over `class_prompts`."""
    from fovea.classify.predictor import ClassifierPredictor

    classifier = build_zero_shot_classifier(model, class_prompts, templates)

    def probs_fn(images: np.ndarray) -> np.ndarray:
        return zero_shot_probs(model, classifier, torch.from_numpy(np.ascontiguousarray(images))).numpy()

    return ClassifierPredictor.from_function(probs_fn, list(class_names or class_prompts), source=source)
