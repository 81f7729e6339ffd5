"""The one anomaly pipeline that runs in-process and inside every export.

`AnomalyPipeline.forward(images uint8 (B, H, W, 3))` does everything that decides a result:
resize to the model's input size, ImageNet normalisation, the model, anomaly-map smoothing,
threshold normalisation (threshold -> 0.5) and resizing the map back to (H, W). TorchScript and
ONNX exports are this same module, so an exported model answers as the trained one does. Only
thresholding at 0.5 and boxes from the mask happen after it, in `fovea.anomaly.predictor`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly.models import build_model, saved_config
from fovea.engine.postprocess import Thresholds, gaussian_blur_map, normalize_torch
from fovea.errors import CheckpointError
from fovea.weights import IMAGENET_MEAN, IMAGENET_STD

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


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


class AnomalyPipeline(nn.Module):
    """uint8 images (B, H, W, 3) -> (scores (B,), maps (B, H, W), raw_scores (B,)); normalised outputs."""

    __jit_unused_properties__ = ["model"]

    def __init__(self, model: nn.Module, input_size: tuple[int, int] = (256, 256), blur_sigma: float = 4.0):
        super().__init__()
        self.core = AnomalyCore(model, blur_sigma)
        self.input_h = int(input_size[0])
        self.input_w = int(input_size[1])
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        # raw-unit thresholds and ranges, set by `set_thresholds`; they travel with every export
        self.register_buffer("thresholds", torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 1.0]))

    @property
    def model(self) -> nn.Module:
        return self.core.model

    def set_thresholds(self, t: Thresholds) -> None:
        self.threshold_rules = (t.image_rule, t.pixel_rule)
        self.thresholds = torch.tensor(
            [t.image_threshold, t.pixel_threshold, t.score_min, t.score_max, t.map_min, t.map_max],
            dtype=torch.float32,
        )

    def get_thresholds(self) -> Thresholds:
        v = [float(a) for a in self.thresholds]
        rules = getattr(self, "threshold_rules", ("", ""))
        return Thresholds(image_threshold=v[0], pixel_threshold=v[1], score_min=v[2], score_max=v[3],
                          map_min=v[4], map_max=v[5], image_rule=rules[0], pixel_rule=rules[1])

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float (B, 3, h, w) resized (bilinear, antialiased) and normalised."""
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=[self.input_h, self.input_w], mode="bilinear", align_corners=False,
                          antialias=True)
        return (x - self.pixel_mean) / self.pixel_std

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised scores (B,) and smoothed maps (B, 1, h, w) at model resolution."""
        return self.core(self.preprocess(images))

    def postprocess(self, scores: torch.Tensor, maps: torch.Tensor, height: int, width: int):
        t = self.thresholds
        maps = F.interpolate(maps, size=[height, width], mode="bilinear", align_corners=False)[:, 0]
        norm_scores = normalize_torch(scores, t[0], t[2], t[3])
        norm_maps = normalize_torch(maps, t[1], t[4], t[5])
        return norm_scores, norm_maps, scores

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores, maps = self.core(self.preprocess(images))
        return self.postprocess(scores, maps, images.shape[1], images.shape[2])

    # --- checkpoints: safetensors for tensors, JSON for the recipe; nothing is pickled -------------
    def recipe(self) -> dict[str, Any]:
        model = self.model
        return {
            "format": "fovea.anomaly/1",
            "model": model.fovea_name,
            "model_config": model.config.to_dict(),
            "input_size": [self.input_h, self.input_w],
            "blur_sigma": self.core.blur_sigma,
            "thresholds": self.get_thresholds().to_dict(),
            "buffer_shapes": {k: list(v.shape) for k, v in self.state_dict().items() if k.startswith("core.model.")
                              and not k.startswith("core.model.extractor.")},
        }

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_FILE))
        recipe = self.recipe()
        if extra:
            recipe["info"] = extra
        (out / CONFIG_FILE).write_text(json.dumps(recipe, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> "AnomalyPipeline":
        from safetensors.torch import load_file

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        cfg_file, w_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_file.is_file() or not w_file.is_file():
            raise CheckpointError(
                f"{folder} is not a fovea anomaly checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}). "
                "Fix: pass the folder written by `fovea anomaly fit`."
            )
        try:
            recipe = json.loads(cfg_file.read_text())
            state = load_file(str(w_file))
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {folder}: {exc}") from exc
        if recipe.get("format") != "fovea.anomaly/1":
            raise CheckpointError(f"{cfg_file}: unknown format {recipe.get('format')!r}")
        # every tensor comes from the file; options older checkpoints lack keep their old behaviour
        model_cfg = dict(saved_config(recipe["model"], recipe["model_config"]), weights="random")
        model = build_model(recipe["model"], **model_cfg)
        for name, shape in recipe.get("buffer_shapes", {}).items():
            _resize_buffer(model, name[len("core.model."):], shape)
        pipe = cls(model, tuple(recipe["input_size"]), recipe.get("blur_sigma", 4.0))
        saved = recipe.get("thresholds", {})
        pipe.threshold_rules = (saved.get("image_rule", ""), saved.get("pixel_rule", ""))
        try:
            pipe.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{w_file} does not match {recipe['model']}: {exc}") from exc
        return pipe.eval()


def _resize_buffer(model: nn.Module, dotted: str, shape: list[int]) -> None:
    """Give a fitted-size buffer (memory bank, Gaussians) its saved shape before loading."""
    *parents, leaf = dotted.split(".")
    mod = model
    for p in parents:
        mod = getattr(mod, p)
    if leaf in mod._buffers:
        mod._buffers[leaf] = torch.zeros(shape, dtype=mod._buffers[leaf].dtype)
