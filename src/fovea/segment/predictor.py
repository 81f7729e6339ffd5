"""The segmentation task on the task layer: `SegmentationPredictor` over in-process, TorchScript and ONNX.

Every runtime runs the same `SegmentationPipeline` inference graph, uint8 (B, H, W, 3) ->
probs (B, C, H, W); this module only takes the argmax into `SegResult`s.
"""

from __future__ import annotations

import numpy as np

from fovea.core import ImageLike, SegResult
from fovea.engine.predictor import Predictor
from fovea.engine.tasks import TaskDef, register_task
from fovea.segment.model import SegmentationPipeline

__all__ = ["SegmentationPredictor"]


class SegmentationPredictor(Predictor):
    """`predict(frames) -> list[SegResult]`. Open with `fovea.load_predictor` or `SegmentationPredictor.load`."""

    kind = "segment"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config["class_names"])

    def make_results(self, outputs, paths):
        probs = np.asarray(outputs[0], np.float32)
        names = self.class_names
        return [SegResult(class_map=p.argmax(0).astype(np.int64), probs=p, class_names=names, image_path=path)
                for p, path in zip(probs, paths)]

    def probs(self, image: ImageLike, image_path: str | None = None) -> np.ndarray:
        """(C, H, W) float32 class probabilities of one (H, W, 3) uint8 RGB image."""
        return self.predict_one(image, image_path).probs


register_task(TaskDef("segment", SegmentationPipeline, SegmentationPredictor, cli="fovea segment"))
