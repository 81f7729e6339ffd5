"""The anomaly task on the task layer: `AnomalyPredictor` over in-process, TorchScript and ONNX models.

Every runtime runs the same `AnomalyPipeline` inference graph, uint8 (B, H, W, 3) ->
(normalised scores (B,), normalised maps (B, H, W), raw scores (B,)); the numpy step after it
(label at 0.5, mask, boxes) is `fovea.anomaly.postprocess.anomaly_result_from_normalized`.
"""

from __future__ import annotations

from fovea.anomaly.pipeline import AnomalyPipeline
from fovea.anomaly.postprocess import Thresholds, anomaly_result_from_normalized
from fovea.engine.predictor import Predictor
from fovea.engine.tasks import TaskDef, register_task

__all__ = ["AnomalyPredictor"]


class AnomalyPredictor(Predictor):
    """`predict(frames) -> list[AnomalyResult]`. Open with `fovea.load_predictor` or `AnomalyPredictor.load`."""

    kind = "anomaly"

    @property
    def thresholds(self) -> Thresholds:
        """The raw-unit thresholds inside the model (an in-process pipeline's current ones)."""
        if self.pipeline is not None:
            return self.pipeline.get_thresholds()
        return Thresholds.from_dict(self.config["thresholds"])

    def make_results(self, outputs, paths):
        scores, maps, raws = outputs
        return [anomaly_result_from_normalized(s, m, r, p) for s, m, r, p in zip(scores, maps, raws, paths)]


register_task(TaskDef("anomaly", AnomalyPipeline, AnomalyPredictor, cli="fovea anomaly"))
