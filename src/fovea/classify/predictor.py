"""One `ClassifierPredictor` for in-process, TorchScript and ONNX classifiers, plus the exporters.

Every backend is a function `uint8 (B, H, W, 3) -> probs (B, C)` running the same
`ClassifierProbs` graph (resize + normalise + backbone + softmax); `predict` only groups frames
of equal size into batches and wraps rows into `ClassResult`s.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fovea.classify.model import ClassifierPipeline, ClassifierProbs, ClassifierRecipe, load_classifier
from fovea.core import ClassResult, ImageLike, frame_image
from fovea.engine.runtime import onnx_session
from fovea.errors import DataError, ExportError

Backend = Callable[[np.ndarray], np.ndarray]
FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
META_KEY = "fovea.json"


def _torch_backend(module: torch.nn.Module) -> Backend:
    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(images))).float().numpy()

    return run


def _onnx_backend(path: Path) -> Backend:
    session, name = onnx_session(path, "fovea classify export")

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(images)})[0]

    return run


class ClassifierPredictor:
    """`predict(frames) -> list[ClassResult]` over any backend; build with `load_predictor(path)`."""

    def __init__(self, backend: Backend, class_names: Sequence[str], kind: str = "torch", source: str = "",
                 recipe: dict | None = None, max_batch: int = 32):
        self.backend = backend
        self.class_names = tuple(class_names)
        self.kind = kind
        self.source = source
        self.recipe = recipe or {}
        self.max_batch = int(max_batch)

    @classmethod
    def from_pipeline(cls, pipeline: ClassifierPipeline, class_names: Sequence[str], **kw) -> "ClassifierPredictor":
        probs = ClassifierProbs(copy.deepcopy(pipeline)).eval()
        return cls(_torch_backend(probs), class_names, kind="torch", **kw)

    def predict_probs(self, frames: Sequence[ImageLike]) -> np.ndarray:
        """(N, C) float32 probabilities; frames of equal size run as one batch."""
        images = [frame_image(f) for f in frames]
        for i, img in enumerate(images):
            if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
                raise DataError(f"frame {i}: expected (H, W, 3) uint8 RGB, got shape {getattr(img, 'shape', None)} "
                                f"dtype {getattr(img, 'dtype', type(img).__name__)}. Fix: fovea.io.to_rgb_uint8.")
        out = np.zeros((len(images), len(self.class_names)), np.float32)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(img.shape[:2], []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.max_batch):
                part = idx[s:s + self.max_batch]
                out[part] = self.backend(np.stack([images[i] for i in part]))
        return out

    def predict(self, frames: Sequence[ImageLike]) -> list[ClassResult]:
        probs = self.predict_probs(frames)
        paths = [f.meta.get("path") if hasattr(f, "meta") else None for f in frames]
        return [ClassResult(probs=p, class_names=self.class_names, image_path=path) for p, path in zip(probs, paths)]


# ----------------------------------------------------------------------------------- export

def _example(recipe: ClassifierRecipe, batch: int = 1, extra: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    h, w = recipe.input_size
    return torch.randint(0, 256, (batch, h + extra, w + 2 * extra, 3), generator=g, dtype=torch.uint8)


def export_torchscript(pipeline: ClassifierPipeline, recipe: ClassifierRecipe, path: str | Path) -> Path:
    """Trace `ClassifierProbs` (input size and batch stay free: the resize is inside)."""
    path = Path(path)
    probs = ClassifierProbs(copy.deepcopy(pipeline)).eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(probs, _example(recipe), check_trace=False)
    except Exception as exc:
        raise ExportError(f"TorchScript export of {recipe.backbone} failed: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path), _extra_files={META_KEY: json.dumps(recipe.to_dict())})
    return path


def export_onnx(pipeline: ClassifierPipeline, recipe: ClassifierRecipe, path: str | Path, opset: int = 18) -> Path:
    """Dynamo ONNX export; batch, H and W of the uint8 input stay dynamic. Recipe in `<path>.json`."""
    path = Path(path)
    probs = ClassifierProbs(copy.deepcopy(pipeline)).eval()
    example = _example(recipe, batch=2, extra=8)
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("height", min=16, max=8192),
            2: torch.export.Dim("width", min=16, max=8192)}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(probs, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                        output_names=["probs"], dynamic_shapes={"images": dims}, verbose=False)
            program.save(str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export of {recipe.backbone} failed: {exc}") from exc
    path.with_suffix(".json").write_text(json.dumps(recipe.to_dict(), indent=1))
    return path


def export_classifier(checkpoint: str | Path, out_dir: str | Path, formats: Sequence[str] = FORMATS,
                      name: str = "classifier") -> dict[str, Path]:
    """Export a trained classifier folder to every requested format; returns {format: path}."""
    pipeline, recipe = load_classifier(checkpoint)
    out = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}. Fix: choose from {FORMATS}.")
        target = Path(out_dir) / f"{name}{SUFFIX[fmt]}"
        out[fmt] = (export_torchscript if fmt == "torchscript" else export_onnx)(pipeline, recipe, target)
    return out


def load_predictor(path: str | Path) -> ClassifierPredictor:
    """A trained folder / .safetensors (in-process), a TorchScript `.pt` or an `.onnx` file."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path} does not exist. Fix: pass a `fovea classify train` folder, a .pt or an .onnx.")
    if path.is_dir() or path.suffix == ".safetensors":
        pipeline, recipe = load_classifier(path)
        return ClassifierPredictor.from_pipeline(pipeline, recipe.class_names, source=str(path),
                                                 recipe=recipe.to_dict())
    if path.suffix == ".pt":
        extra = {META_KEY: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise ExportError(f"cannot load TorchScript file {path}: {exc}") from exc
        if not extra[META_KEY]:
            raise ExportError(f"{path} has no fovea classifier metadata. Fix: export with `fovea classify export`.")
        recipe = json.loads(extra[META_KEY])
        return ClassifierPredictor(_torch_backend(module.eval()), recipe["class_names"], kind="torchscript",
                                   source=str(path), recipe=recipe)
    if path.suffix == ".onnx":
        meta = path.with_suffix(".json")
        if not meta.is_file():
            raise ExportError(f"{meta} (class names, input size) is missing next to {path}. Fix: re-export.")
        recipe = json.loads(meta.read_text())
        return ClassifierPredictor(_onnx_backend(path), recipe["class_names"], kind="onnx", source=str(path),
                                   recipe=recipe)
    raise ExportError(f"{path}: unknown model file type {path.suffix!r}. Fix: use a folder, .safetensors, .pt or .onnx.")
