"""One `Predictor` for in-process, TorchScript and ONNX segmentation models, and their export.

Every backend is a function `uint8 (1, H, W, 3) -> probs (1, C, H, W)` running the same
`SegmentationPipeline` graph; the numpy step after it (argmax -> `SegResult`) is shared.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fovea.core import ImageLike, SegResult, frame_image
from fovea.engine.runtime import onnx_session
from fovea.errors import CheckpointError, DataError, ExportError
from fovea.segment.model import CONFIG_FILE, SegmentationPipeline

Backend = Callable[[np.ndarray], np.ndarray]
FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def _torch_backend(module) -> Backend:
    def run(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.array(image, copy=True))).numpy()

    return run


def _onnx_backend(path: Path) -> Backend:
    session, name = onnx_session(path, "fovea segment export")
    return lambda image: session.run(None, {name: np.ascontiguousarray(image)})[0]


def _example(pipe: SegmentationPipeline, dh: int = 0, dw: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, pipe.input_h + dh, pipe.input_w + dw, 3), generator=g, dtype=torch.uint8)


def export_torchscript(pipe: SegmentationPipeline, path: str | Path) -> Path:
    """Trace the fixed-size network, script the size-dynamic wrapper around it; recipe in the file."""
    path = Path(path)
    recipe = json.dumps(pipe.recipe())
    pipe = copy.deepcopy(pipe).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.model = torch.jit.trace(pipe.model, pipe.preprocess(_example(pipe)), check_trace=False)
        try:
            scripted = torch.jit.script(pipe)
        except Exception as exc:
            raise ExportError(f"TorchScript export of the segmentation pipeline failed: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path), _extra_files={"fovea.json": recipe})
    return path


def export_onnx(pipe: SegmentationPipeline, path: str | Path, opset: int = 18) -> Path:
    """Dynamo ONNX export with dynamic H and W; the recipe goes to a `.json` beside it."""
    path = Path(path)
    pipe = copy.deepcopy(pipe).eval()
    h, w = torch.export.Dim("height", min=16, max=8192), torch.export.Dim("width", min=16, max=8192)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(pipe, (_example(pipe, 8, 16),), dynamo=True, opset_version=opset,
                                        input_names=["image"], output_names=["probs"],
                                        dynamic_shapes={"images": {1: h, 2: w}}, verbose=False)
            program.save(str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export of the segmentation pipeline failed: {exc}") from exc
    path.with_suffix(".json").write_text(json.dumps(pipe.recipe(), indent=2))
    return path


def export(pipe: SegmentationPipeline, out_dir: str | Path, formats=FORMATS, name: str = "model") -> dict[str, Path]:
    """Write every requested format into `out_dir`; returns {format: path}."""
    out = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}. Fix: choose from {FORMATS}.")
        target = Path(out_dir) / f"{name}{SUFFIX[fmt]}"
        out[fmt] = export_torchscript(pipe, target) if fmt == "torchscript" else export_onnx(pipe, target)
    return out


class SegmentationPredictor:
    """`predict(frames) -> list[SegResult]` over any backend. Load with `SegmentationPredictor.load`."""

    def __init__(self, backend: Backend, class_names: Sequence[str], kind: str, source: str = "",
                 pipeline: SegmentationPipeline | None = None):
        self.backend = backend
        self.class_names = tuple(class_names)
        self.kind = kind
        self.source = source
        self.pipeline = pipeline  # in-process only: for saving and exporting

    @classmethod
    def from_pipeline(cls, pipe: SegmentationPipeline) -> "SegmentationPredictor":
        pipe = pipe.eval()
        return cls(_torch_backend(pipe), pipe.config.class_names, "in-process", pipeline=pipe)

    @classmethod
    def load(cls, path: str | Path) -> "SegmentationPredictor":
        """A checkpoint folder (in-process), a TorchScript `.pt`, or an ONNX `.onnx` (+ its `.json`)."""
        path = Path(path)
        if path.is_dir() or path.name == CONFIG_FILE:
            return cls.from_pipeline(SegmentationPipeline.load(path))
        if not path.is_file():
            raise CheckpointError(f"model {path} does not exist. Fix: pass a checkpoint folder, .pt or .onnx file.")
        if path.suffix == ".onnx":
            meta = path.with_suffix(".json")
            if not meta.is_file():
                raise CheckpointError(f"{meta} (class names, written by the export) is missing beside {path}.")
            names = json.loads(meta.read_text())["model_config"]["class_names"]
            return cls(_onnx_backend(path), names, "onnx", str(path))
        if path.suffix == ".pt":
            extra = {"fovea.json": ""}
            try:
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
                names = json.loads(extra["fovea.json"])["model_config"]["class_names"]
            except Exception as exc:
                raise ExportError(f"cannot load TorchScript segmentation model {path}: {exc}") from exc
            return cls(_torch_backend(module.eval()), names, "torchscript", str(path))
        raise CheckpointError(f"unknown model file type {path.suffix!r} ({path}). Fix: use a folder, .pt or .onnx.")

    def probs(self, image: np.ndarray, image_path: str | None = None) -> np.ndarray:
        """(C, H, W) float32 class probabilities of one (H, W, 3) uint8 RGB image."""
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8):
            raise DataError(f"expected an (H, W, 3) uint8 RGB image{' ' + image_path if image_path else ''}, got "
                            f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}. "
                            "Fix: read images with fovea.io.read_image.")
        return np.asarray(self.backend(image[None]), np.float32)[0]

    def predict_one(self, image: np.ndarray, image_path: str | None = None) -> SegResult:
        p = self.probs(image, image_path)
        return SegResult(class_map=p.argmax(0).astype(np.int64), probs=p, class_names=self.class_names,
                         image_path=image_path)

    def predict(self, frames: Sequence[ImageLike], paths: Sequence[str | None] | None = None) -> list[SegResult]:
        paths = list(paths) if paths is not None else [None] * len(frames)
        return [self.predict_one(frame_image(f), p) for f, p in zip(frames, paths)]

    def save(self, out_dir: str | Path, extra: dict | None = None) -> Path:
        if self.pipeline is None:
            raise ExportError(f"a {self.kind} model cannot be saved as a checkpoint; keep the training checkpoint.")
        return self.pipeline.save(out_dir, extra)

    def export(self, out_dir: str | Path, formats=FORMATS, name: str = "model") -> dict[str, Path]:
        if self.pipeline is None:
            raise ExportError(f"a {self.kind} model cannot be re-exported; export from the checkpoint folder.")
        return export(self.pipeline, out_dir, formats, name)
