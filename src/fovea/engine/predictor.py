"""One Predictor contract for every task and every runtime, and `load_predictor` for any model file.

A runtime is a function `uint8 (B, H, W, 3) -> tuple of arrays` running the task's
`InferenceGraph`: in-process (torch), TorchScript or ONNX. `Predictor.predict(frames)` checks each
frame, groups frames of equal size into batches of at most `max_batch`, runs the runtime and lets
the task turn each batch's arrays into typed results (`Predictor.make_results`). Tasks subclass
`Predictor`, set `kind` to the task name and implement `make_results`; nothing else differs.

`load_predictor(path)` opens a checkpoint folder (current or legacy layout), a `.pt` or an
`.onnx` of any registered task and returns that task's Predictor subclass.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from fovea.core import Frame, ImageLike, check_image
from fovea.engine.checkpoint import (LEGACY_LAYOUTS, RECIPE_FILE, Recipe, load_checkpoint, read_recipe,
                                     save_checkpoint)
from fovea.engine.export import FORMATS, ONNX_META, TORCHSCRIPT_META, export
from fovea.engine.pipeline import InferenceGraph, TaskPipeline
from fovea.engine.runtime import onnx_session
from fovea.engine.tasks import get_task
from fovea.engine.threads import govern
from fovea.errors import CheckpointError, DataError, ExportError

Runtime = Callable[[np.ndarray], tuple[np.ndarray, ...]]
CHECKPOINT_FILES = {RECIPE_FILE} | {v.recipe_file for v in LEGACY_LAYOUTS.values()}


def torch_runtime(module: torch.nn.Module) -> Runtime:
    """An in-process or TorchScript module as a runtime (outputs always a tuple of float arrays)."""

    def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
        govern()  # threads = free cores, at most the cap (fovea.engine.threads)
        with torch.inference_mode():
            out = module(torch.from_numpy(images))
        out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return tuple(o.float().numpy() for o in out)

    return run


def onnx_runtime(path: str | Path, session=None) -> Runtime:
    """An ONNX file as a runtime; its first input is fed whatever its name (`images`, legacy `image`)."""
    if session is None:
        session, _ = onnx_session(path, "fovea <task> export")
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(o) for o in session.run(None, {name: np.ascontiguousarray(images)}))

    return run


class Predictor:
    """`predict(frames) -> list[Result]` (batched) and `predict_one(image) -> Result` over any runtime.

    kind: the task name (class attribute). runtime: "torch" | "torchscript" | "onnx".
    recipe: the model's Recipe (task, format, config). pipeline: the in-process `TaskPipeline`
    (None for exported files; needed by `save` and `export`). max_batch: images per runtime call,
    fewer when their pixels would pass `max_batch_pixels` (outputs such as (B, C, H, W) segmentation
    probabilities grow with it).
    """

    max_batch_pixels: int = 1 << 24  # 16 Mpx per call: eight 1080p frames, hundreds of line crops

    kind: ClassVar[str] = ""

    def __init__(self, run: Runtime, recipe: Recipe, *, runtime: str = "torch", source: str = "",
                 pipeline: TaskPipeline | None = None, max_batch: int = 32):
        if recipe.task != self.kind:
            raise CheckpointError(f"{source or 'model'} holds a {recipe.task!r} model, not a {self.kind!r} one. "
                                  "Fix: open it with fovea.load_predictor.")
        self.run = run
        self.recipe = recipe
        self.runtime = runtime
        self.source = source
        self.pipeline = pipeline
        self.max_batch = max(1, int(max_batch))

    @property
    def config(self) -> dict[str, Any]:
        """The task config of the model (class names, thresholds, input size, ...)."""
        return self.recipe.config

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipeline: TaskPipeline, source: str = "", info: dict | None = None,
                      max_batch: int = 32) -> "Predictor":
        """An in-process predictor running `InferenceGraph(pipeline)` (the pipeline is put in eval mode)."""
        pipeline = pipeline.eval()
        recipe = Recipe(pipeline.task, pipeline.config(), info=dict(info or {}))
        return cls(torch_runtime(InferenceGraph(pipeline)), recipe, runtime="torch", source=source,
                   pipeline=pipeline, max_batch=max_batch)

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        """`load_predictor(path)`, checked to hold a model of this class's task."""
        return load_predictor(path, expected=cls)

    # --- prediction ---------------------------------------------------------------------------------
    def make_results(self, outputs: tuple[np.ndarray, ...], paths: Sequence[str | None]) -> list:
        """One batch of runtime outputs (each (B, ...)) -> B typed results. Tasks implement this."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_results")

    def predict(self, frames: Sequence[ImageLike], paths: Sequence[str | None] | None = None) -> list:
        """Typed results, one per frame, in order; frames of equal size run as one batch.

        frames: (H, W, 3) uint8 RGB arrays or `Frame`s. paths: image paths for the results
        (default: each Frame's `meta["path"]`, else None).
        """
        frames = list(frames)
        if paths is None:
            paths = [f.meta.get("path") if isinstance(f, Frame) else None for f in frames]
        elif len(paths) != len(frames):
            raise DataError(f"predict got {len(paths)} paths for {len(frames)} frames. Fix: one path (or None) per frame.")
        paths = [None if p is None else str(p) for p in paths]
        images = [check_image(f.image if isinstance(f, Frame) else f, p or f"frame {i}")
                  for i, (f, p) in enumerate(zip(frames, paths))]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(img.shape[:2], []).append(i)
        results: list = [None] * len(images)
        for (h, w), idx in groups.items():
            step = max(1, min(self.max_batch, self.max_batch_pixels // (h * w)))
            for s in range(0, len(idx), step):
                part = idx[s:s + step]
                outputs = self.run(np.stack([images[i] for i in part]))
                for i, r in zip(part, self.make_results(outputs, [paths[i] for i in part])):
                    results[i] = r
        return results

    def predict_one(self, image: ImageLike, image_path: str | None = None):
        """The result of one image (same numbers as `predict` gives it in a batch)."""
        return self.predict([image], None if image_path is None and isinstance(image, Frame) else [image_path])[0]

    # --- saving -------------------------------------------------------------------------------------
    def _need_pipeline(self, what: str) -> TaskPipeline:
        if self.pipeline is None:
            raise ExportError(f"a {self.runtime} model ({self.source}) cannot be {what}; only in-process models can. "
                              "Fix: use the checkpoint folder the model was trained into.")
        return self.pipeline

    def save(self, out_dir: str | Path, info: dict | None = None) -> Path:
        """Write the in-process model as a checkpoint folder (`recipe.json` + `model.safetensors`)."""
        return save_checkpoint(self._need_pipeline("saved"), out_dir, {**self.recipe.info, **(info or {})})

    def export(self, out_dir: str | Path, formats: Sequence[str] = FORMATS, name: str = "model") -> dict[str, Path]:
        """Export the in-process model to TorchScript and/or ONNX; returns {format: path}."""
        return export(self._need_pipeline("exported"), out_dir, formats, name, self.recipe.info)


# ----------------------------------------------------------------------------------- opening files

def load_predictor(path: str | Path, expected: type[Predictor] | None = None) -> Predictor:
    """A checkpoint folder (or a file in one), a TorchScript `.pt` or an ONNX `.onnx` of any registered task.

    Legacy files (written before the task layer: recipe beside an ONNX file, batch fixed at 1)
    open too. expected: a Predictor subclass the file must belong to (else a CheckpointError).
    Use `fovea.load_predictor`, which registers the built-in tasks first.
    """
    path = Path(path)
    if path.is_dir() or path.name in CHECKPOINT_FILES or path.suffix == ".safetensors":
        recipe = read_recipe(path)
        _check_expected(recipe, expected, path)
        pipeline, recipe = load_checkpoint(path)
        opened = dict(run=torch_runtime(InferenceGraph(pipeline)), runtime="torch", pipeline=pipeline)
    elif not path.is_file():
        raise CheckpointError(f"model {path} does not exist. Fix: pass a checkpoint folder, a .pt or an .onnx file.")
    elif path.suffix == ".pt":
        recipe, opened = _open_torchscript(path)
    elif path.suffix == ".onnx":
        recipe, opened = _open_onnx(path)
    else:
        raise CheckpointError(f"unknown model file type {path.suffix!r} ({path}). Fix: pass a checkpoint folder, "
                              "a .pt (TorchScript) or an .onnx file written by `fovea <task> export`.")
    _check_expected(recipe, expected, path)
    cls = get_task(recipe.task, str(path)).predictor
    run = opened.pop("run")
    return cls(run, recipe, source=str(path), **opened)


def _check_expected(recipe: Recipe, expected: type[Predictor] | None, path: Path) -> None:
    if expected is not None and recipe.task != expected.kind:
        raise CheckpointError(f"{path} holds a {recipe.task!r} model, not a {expected.kind!r} one. Fix: open it "
                              f"with fovea.load_predictor or the `fovea {recipe.task}` commands.")


def _open_torchscript(path: Path) -> tuple[Recipe, dict]:
    extra = {TORCHSCRIPT_META: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load announces its deprecation
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise ExportError(f"cannot load TorchScript file {path}: {exc}. Fix: re-export it with "
                          "`fovea <task> export`.") from exc
    if not extra[TORCHSCRIPT_META]:
        raise ExportError(f"{path} carries no fovea recipe ({TORCHSCRIPT_META}). Fix: export it with fovea.")
    recipe = Recipe.from_dict(json.loads(extra[TORCHSCRIPT_META]), str(path))
    # legacy exports were traced for one image at a time
    return recipe, dict(run=torch_runtime(module.eval()), runtime="torchscript", max_batch=1 if recipe.legacy else 32)


def _open_onnx(path: Path) -> tuple[Recipe, dict]:
    session, _ = onnx_session(path, "fovea <task> export")
    meta = session.get_modelmeta().custom_metadata_map.get(ONNX_META)
    sidecar = path.with_suffix(".json")
    if meta is None and sidecar.is_file():  # legacy exports wrote the recipe beside the file
        meta = sidecar.read_text()
    if meta is None:
        raise ExportError(f"{path} carries no fovea recipe (metadata {ONNX_META!r}) and has no {sidecar.name} beside "
                          "it. Fix: export it with `fovea <task> export`.")
    recipe = Recipe.from_dict(json.loads(meta), str(path))
    batch = session.get_inputs()[0].shape[0]  # an int when the file fixes it (legacy: 1)
    return recipe, dict(run=onnx_runtime(path, session), runtime="onnx",
                        max_batch=batch if isinstance(batch, int) and batch > 0 else 32)
