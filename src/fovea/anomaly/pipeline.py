"""The anomaly task's pipeline: one graph in-process and inside every export.

`AnomalyPipeline` is the task layer's `TaskPipeline` for anomaly detection. `pipe.raw(images uint8
(B, H, W, 3))` resizes to the model's input size, normalises (ImageNet), runs the model and smooths
the map: raw scores (B,) and maps (B, 1, h, w), what thresholds are fitted on. Its post-process
normalises with the fitted thresholds (threshold -> 0.5, buffers that travel with the export) and
resizes the map back to (H, W): `InferenceGraph(pipe)` returns (scores (B,), maps (B, H, W),
raw scores (B,)). Only thresholding at 0.5 and boxes from the mask happen after it, in
`fovea.anomaly.predictor`. Checkpoints and exports are the task layer's (`fovea.engine.checkpoint`,
`fovea.engine.export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly.models import build_model, saved_config
from fovea.anomaly.postprocess import Thresholds, gaussian_blur_map, normalize_torch
from fovea.engine.checkpoint import load_checkpoint, save_checkpoint
from fovea.engine.pipeline import TaskPipeline


class AnomalyCore(nn.Module):
    """Fixed-size part: model + smoothing. (B, 3, h, w) normalised -> (scores (B,), maps (B, 1, h, w))."""

    def __init__(self, model: nn.Module, blur_sigma: float = 4.0):
        super().__init__()
        self.model = model
        self.blur_sigma = float(blur_sigma)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps = self.model(x)
        if self.blur_sigma > 0:
            maps = gaussian_blur_map(maps, self.blur_sigma)
        return scores, maps


class AnomalyPipeline(TaskPipeline):
    """uint8 images (B, H, W, 3) -> raw (scores (B,), maps (B, 1, h, w)); post-processed:
    (scores (B,), maps (B, H, W), raw_scores (B,)) normalised so that each threshold maps to 0.5."""

    task = "anomaly"
    output_names = ("score", "anomaly_map", "raw_score")
    __jit_unused_properties__ = ["model", "core"]

    def __init__(self, model: nn.Module, input_size: tuple[int, int] = (256, 256), blur_sigma: float = 4.0):
        super().__init__(AnomalyCore(model, blur_sigma), input_size)
        # raw-unit thresholds and ranges, set by `set_thresholds`; they travel with every export
        self.register_buffer("thresholds", torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 1.0]))
        self.threshold_rules = ("", "")

    @property
    def core(self) -> AnomalyCore:
        return self.network

    @property
    def model(self) -> nn.Module:
        return self.network.model

    def set_thresholds(self, t: Thresholds) -> None:
        self.threshold_rules = (t.image_rule, t.pixel_rule)
        self.thresholds = torch.tensor(
            [t.image_threshold, t.pixel_threshold, t.score_min, t.score_max, t.map_min, t.map_max],
            dtype=torch.float32,
        )

    def get_thresholds(self) -> Thresholds:
        v = [float(a) for a in self.thresholds]
        rules = self.threshold_rules
        return Thresholds(image_threshold=v[0], pixel_threshold=v[1], score_min=v[2], score_max=v[3],
                          map_min=v[4], map_max=v[5], image_rule=rules[0], pixel_rule=rules[1])

    def postprocess(self, outputs: tuple[torch.Tensor, torch.Tensor], height: int,
                    width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores, maps = outputs
        t = self.thresholds
        maps = F.interpolate(maps, size=[height, width], mode="bilinear", align_corners=False)[:, 0]
        norm_scores = normalize_torch(scores, t[0], t[2], t[3])
        norm_maps = normalize_torch(maps, t[1], t[4], t[5])
        return norm_scores, norm_maps, scores

    # --- the recipe: rebuilt by `from_config`, saved by the task layer --------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "model": self.model.fovea_name,
            "model_config": self.model.config.to_dict(),
            "input_size": [self.input_h, self.input_w],
            "blur_sigma": self.network.blur_sigma,
            "thresholds": self.get_thresholds().to_dict(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AnomalyPipeline":
        """Every tensor (memory bank, Gaussians, thresholds) then comes from the weights file; options that
        older checkpoints lack keep their old behaviour (`saved_config`)."""
        model_cfg = dict(saved_config(config["model"], config["model_config"]), weights="random")
        pipe = cls(build_model(config["model"], **model_cfg), tuple(config["input_size"]),
                   config.get("blur_sigma", 4.0))
        saved = config.get("thresholds", {})
        pipe.threshold_rules = (saved.get("image_rule", ""), saved.get("pixel_rule", ""))
        return pipe

    def recipe(self) -> dict[str, Any]:
        """The task config (kept for callers of the pre-task-layer API)."""
        return self.config()

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Checkpoint folder `recipe.json` + `model.safetensors` (extra: provenance stored as `info`)."""
        return save_checkpoint(self, out_dir, extra)

    @classmethod
    def load(cls, path: str | Path) -> "AnomalyPipeline":
        """An anomaly checkpoint folder, current or legacy (`config.json` + `model.safetensors`) layout."""
        return load_checkpoint(path, cls)[0]
