"""The classification task on the task layer: `ClassifierPredictor` and the export of a trained folder.

Every runtime (in-process, TorchScript, ONNX) runs the same `ClassifierPipeline` inference graph,
uint8 (B, H, W, 3) -> probs (B, C); this module only wraps rows into `ClassResult`s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fovea.classify.model import ClassifierPipeline, ClassifierRecipe, load_classifier
from fovea.core import ClassResult, ImageLike
from fovea.engine.checkpoint import Recipe
from fovea.engine.export import FORMATS, export
from fovea.engine.predictor import Predictor
from fovea.engine.tasks import TaskDef, register_task

__all__ = ["ClassifierPredictor", "FORMATS", "export_classifier", "load_predictor"]


class ClassifierPredictor(Predictor):
    """`predict(frames) -> list[ClassResult]`; `predict_probs(frames) -> (N, C)`. Open with `load_predictor`."""

    kind = "classify"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config["class_names"])

    @classmethod
    def from_function(cls, probs_fn: Callable[[np.ndarray], np.ndarray], class_names: Sequence[str],
                      source: str = "function", max_batch: int = 32) -> "ClassifierPredictor":
        """Any function uint8 (B, H, W, 3) -> probabilities (B, C) as a classify predictor (tests, rules)."""
        recipe = Recipe("classify", ClassifierRecipe(backbone="", class_names=list(class_names)).to_dict())
        return cls(lambda images: (np.asarray(probs_fn(images), np.float32),), recipe, runtime="function",
                   source=source, max_batch=max_batch)

    def make_results(self, outputs, paths):
        (probs,) = outputs[:1]
        names = self.class_names
        return [ClassResult(probs=np.asarray(p, np.float32), class_names=names, image_path=path)
                for p, path in zip(probs, paths)]

    def predict_probs(self, frames: Sequence[ImageLike]) -> np.ndarray:
        """(N, C) float32 probabilities; frames of equal size run as one batch."""
        results = self.predict(frames)
        return np.stack([r.probs for r in results]) if results else np.zeros((0, len(self.class_names)), np.float32)


def export_classifier(checkpoint: str | Path, out_dir: str | Path, formats: Sequence[str] = FORMATS,
                      name: str = "classifier") -> dict[str, Path]:
    """Export a trained classifier folder to every requested format; returns {format: path}."""
    pipeline, _ = load_classifier(checkpoint)
    return export(pipeline, out_dir, formats, name)


def load_predictor(path: str | Path) -> ClassifierPredictor:
    """A classifier checkpoint folder, `.pt` or `.onnx` (alias of `ClassifierPredictor.load`)."""
    return ClassifierPredictor.load(path)


register_task(TaskDef("classify", ClassifierPipeline, ClassifierPredictor, cli="fovea classify"))
