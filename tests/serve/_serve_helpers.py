"""Tiny models and image helpers shared by the server tests."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

TINY = "test_efficientnet"


def textures(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """n (h, w, 3) uint8 striped noise images."""
    rng = np.random.default_rng(seed)
    xx = np.arange(w)[None, :, None]
    return [(rng.integers(80, 170, (h, w, 3)) + 30 * np.sin(xx / 3.0 + i)).clip(0, 255).astype(np.uint8)
            for i in range(n)]


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def build_classifier():
    from fovea.classify.model import ClassifierRecipe, build_classifier as build
    from fovea.classify.predictor import ClassifierPredictor

    torch.manual_seed(0)
    pipe = build(ClassifierRecipe(backbone=TINY, class_names=["good", "damaged", "box"], input_size=(32, 32),
                                  weights="random"))
    with torch.no_grad():  # a non-trivial head so the probabilities are far from uniform
        pipe.backbone.get_classifier().weight.normal_(0, 20.0)
    return ClassifierPredictor.from_pipeline(pipe.eval())


def build_patchcore():
    from fovea.anomaly.models import build_model
    from fovea.anomaly.pipeline import AnomalyPipeline
    from fovea.anomaly.postprocess import Thresholds
    from fovea.anomaly.predictor import AnomalyPredictor

    torch.manual_seed(0)
    pipe = AnomalyPipeline(build_model("patchcore", backbone=TINY, weights="random", layers=(2, 3),
                                       coreset_ratio=0.25, projection_dim=16), (32, 32), blur_sigma=1.0).eval()
    pipe.model.fit([torch.cat([pipe.preprocess(torch.from_numpy(t)[None]) for t in textures(4, 32, 32, 0)])])
    pipe.set_thresholds(Thresholds(0.0, 0.0, -10.0, 10.0, -10.0, 10.0))
    return AnomalyPredictor.from_pipeline(pipe)
