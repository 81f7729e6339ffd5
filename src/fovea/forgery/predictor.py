"""The forgery task on the task layer: `ForgeryPredictor` over in-process, TorchScript and ONNX.

Every runtime runs the same `ForgeryPipeline` inference graph, uint8 (B, H, W, 3) -> manipulation
probability (B, 1, H, W); this module turns it into `SegResult`s with the two classes
("authentic", "manipulated"): probs (2, H, W) = (1 - p, p), class_map = 1 where p > 0.5.
"""

from __future__ import annotations

import numpy as np

from fovea.core import ImageLike, SegResult
from fovea.engine.predictor import Predictor
from fovea.engine.tasks import TaskDef, register_task
from fovea.forgery.model import CLASS_NAMES, ForgeryPipeline

__all__ = ["ForgeryPredictor"]


class ForgeryPredictor(Predictor):
    """`predict(frames) -> list[SegResult]` (class 1 = manipulated). Open with `fovea.load_predictor`."""

    kind = "forgery"
    class_names = CLASS_NAMES

    def make_results(self, outputs, paths):
        prob = np.asarray(outputs[0], np.float32)[:, 0]
        return [SegResult(class_map=(p > 0.5).astype(np.int64), probs=np.stack([1.0 - p, p]),
                          class_names=CLASS_NAMES, image_path=path) for p, path in zip(prob, paths)]

    def manipulation_map(self, image: ImageLike, image_path: str | None = None) -> np.ndarray:
        """(H, W) float32 probability that each pixel of one (H, W, 3) uint8 RGB image was manipulated."""
        return self.predict_one(image, image_path).probs[1]


register_task(TaskDef("forgery", ForgeryPipeline, ForgeryPredictor, cli="fovea forgery"))
