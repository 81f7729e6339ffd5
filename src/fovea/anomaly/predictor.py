"""One `Predictor` for in-process, TorchScript and ONNX anomaly models.

Every backend is a function `uint8 (1, H, W, 3) -> (score (1,), map (1, H, W), raw (1,))` that
runs the same `AnomalyPipeline` graph; the numpy step after it (label, mask, boxes) is shared:
`fovea.engine.postprocess.anomaly_result_from_normalized`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fovea.anomaly.pipeline import CONFIG_FILE, AnomalyPipeline
from fovea.core import AnomalyResult, ImageLike, frame_image
from fovea.engine.postprocess import Thresholds, anomaly_result_from_normalized
from fovea.engine.runtime import onnx_session
from fovea.errors import CheckpointError, DataError, ExportError

Backend = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _torch_backend(module) -> Backend:
    def run(image: np.ndarray):
        with torch.no_grad():
            s, m, r = module(torch.from_numpy(np.require(image, requirements=["C", "W"])))
        return s.numpy(), m.numpy(), r.numpy()

    return run


def _onnx_backend(path: Path) -> Backend:
    session, name = onnx_session(path, "fovea anomaly export")

    def run(image: np.ndarray):
        s, m, r = session.run(None, {name: np.ascontiguousarray(image)})
        return s, m, r

    return run


class AnomalyPredictor:
    """`predict(images) -> list[AnomalyResult]` over any backend. Load with `AnomalyPredictor.load`."""

    def __init__(self, backend: Backend, kind: str, source: str = "", recipe: dict | None = None):
        self.backend = backend
        self.kind = kind
        self.source = source
        self.recipe = recipe or {}

    @property
    def thresholds(self) -> Thresholds | None:
        """The raw-unit thresholds inside the model (None if the file carries no recipe)."""
        t = self.recipe.get("thresholds")
        return Thresholds.from_dict(t) if t else None

    @classmethod
    def from_pipeline(cls, pipe: AnomalyPipeline) -> "AnomalyPredictor":
        return cls(_torch_backend(pipe.eval()), "in-process", recipe=pipe.recipe())

    @classmethod
    def load(cls, path: str | Path) -> "AnomalyPredictor":
        """A checkpoint folder (in-process), a TorchScript `.pt`, or an ONNX `.onnx` file."""
        path = Path(path)
        if path.is_dir() or path.name == CONFIG_FILE:
            pipe = AnomalyPipeline.load(path)
            return cls(_torch_backend(pipe), "in-process", str(path), pipe.recipe())
        if not path.is_file():
            raise CheckpointError(f"model {path} does not exist. Fix: pass a checkpoint folder, .pt or .onnx file.")
        if path.suffix == ".onnx":
            meta = path.with_suffix(".json")
            recipe = json.loads(meta.read_text()) if meta.is_file() else None
            return cls(_onnx_backend(path), "onnx", str(path), recipe)
        if path.suffix == ".pt":
            try:
                extra = {"fovea.json": ""}
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            except Exception as exc:
                raise ExportError(f"cannot load TorchScript model {path}: {exc}") from exc
            recipe = json.loads(extra["fovea.json"]) if extra["fovea.json"] else None
            return cls(_torch_backend(module.eval()), "torchscript", str(path), recipe)
        raise CheckpointError(f"unknown model file type {path.suffix!r} ({path}). Fix: use a folder, .pt or .onnx.")

    def predict_one(self, image: np.ndarray, image_path: str | None = None) -> AnomalyResult:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise DataError(
                f"expected an (H, W, 3) uint8 RGB image{' ' + image_path if image_path else ''}, got "
                f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}. "
                "Fix: read images with fovea.io.read_image."
            )
        s, m, r = self.backend(image[None])
        return anomaly_result_from_normalized(s, m, r, image_path)

    def predict(self, frames: Sequence[ImageLike], paths: Sequence[str | None] | None = None) -> list[AnomalyResult]:
        paths = list(paths) if paths is not None else [None] * len(frames)
        return [self.predict_one(frame_image(f), p) for f, p in zip(frames, paths)]
