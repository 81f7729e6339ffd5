"""One export path for every task: a `TaskPipeline` -> TorchScript `.pt` and/or ONNX `.onnx`.

Both files hold `InferenceGraph(pipeline)`: uint8 images (B, H, W, 3) in, with batch, H and W
dynamic, under the input name `images`; the task's post-processed outputs out, named by
`pipeline.output_names`. The recipe (task, format, config) is embedded in the file — the
TorchScript extra file `fovea.json`, the ONNX metadata entry `fovea.recipe` — so a bare `.pt`
or `.onnx` opens with `fovea.load_predictor` and nothing beside it.

TorchScript: the fixed-size `network` is traced (it always sees (B, 3, h, w) at the input size),
and the size-dynamic wrapper around it (resize, normalisation, post-processing) is scripted.
ONNX: the dynamo exporter over the whole graph.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Sequence

import torch

from fovea.engine.checkpoint import Recipe
from fovea.engine.pipeline import InferenceGraph, TaskPipeline
from fovea.errors import ExportError

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
INPUT_NAME = "images"
TORCHSCRIPT_META = "fovea.json"
ONNX_META = "fovea.recipe"


def example_images(pipeline: TaskPipeline, batch: int = 1, extra_h: int = 0, extra_w: int = 0) -> torch.Tensor:
    """Seeded random uint8 (batch, h + extra_h, w + extra_w, 3) at the pipeline's input size."""
    g = torch.Generator().manual_seed(0)
    shape = (batch, pipeline.input_h + extra_h, pipeline.input_w + extra_w, 3)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def _recipe_json(pipeline: TaskPipeline, info: dict | None) -> str:
    return Recipe(pipeline.task, pipeline.config(), info=dict(info or {})).to_json()


def _frozen_copy(pipeline: TaskPipeline) -> TaskPipeline:
    pipe = copy.deepcopy(pipeline).eval()
    for p in pipe.parameters():
        p.requires_grad_(False)
    return pipe


def export_torchscript(pipeline: TaskPipeline, path: str | Path, info: dict | None = None) -> Path:
    """Trace the network at the input size (batch 2), script the wrapper; the recipe goes in `fovea.json`."""
    path = Path(path)
    pipe = _frozen_copy(pipeline)
    name = type(pipeline).__name__
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit announces its deprecation
        try:
            pipe.network = torch.jit.trace(pipe.network, pipe.preprocess(example_images(pipe, batch=2)),
                                           check_trace=False)
            scripted = torch.jit.script(InferenceGraph(pipe))
        except Exception as exc:
            raise ExportError(f"TorchScript export of {name} to {path} failed: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path), _extra_files={TORCHSCRIPT_META: _recipe_json(pipeline, info)})
    return path


def export_onnx(pipeline: TaskPipeline, path: str | Path, opset: int = 18, info: dict | None = None) -> Path:
    """Dynamo ONNX export; batch, H and W of `images` stay dynamic; the recipe goes in metadata `fovea.recipe`."""
    path = Path(path)
    graph = InferenceGraph(_frozen_copy(pipeline)).eval()
    example = example_images(pipeline, batch=2, extra_h=8, extra_w=16)
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("height", min=16, max=8192),
            2: torch.export.Dim("width", min=16, max=8192)}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=list(pipeline.output_names),
                                        dynamic_shapes={"images": dims}, verbose=False)
            program.model.metadata_props[ONNX_META] = _recipe_json(pipeline, info)
            program.save(str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(pipeline).__name__} to {path} failed: {exc}") from exc
    return path


def export(pipeline: TaskPipeline, out_dir: str | Path, formats: Sequence[str] = FORMATS, name: str = "model",
           info: dict | None = None) -> dict[str, Path]:
    """Write `out_dir/<name>.pt` and/or `out_dir/<name>.onnx`; returns {format: path}."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}. Fix: choose from {list(FORMATS)}.")
    out = {}
    for fmt in formats:
        target = Path(out_dir) / f"{name}{SUFFIX[fmt]}"
        out[fmt] = export_torchscript(pipeline, target, info) if fmt == "torchscript" else \
            export_onnx(pipeline, target, info=info)
    return out
