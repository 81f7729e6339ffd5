"""Export the whole `AnomalyPipeline` (pre-processing, model, post-processing) to TorchScript or ONNX.

Both files take one uint8 image (1, H, W, 3) of any size and return the pipeline's three outputs
(normalised score (1,), normalised map (1, H, W), raw score (1,)). The thresholds are inside.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch

from fovea.anomaly.pipeline import AnomalyPipeline
from fovea.errors import ExportError

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def _example(pipe: AnomalyPipeline, height: int | None = None, width: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    h, w = height or pipe.input_h, width or pipe.input_w
    return torch.randint(0, 256, (1, h, w, 3), generator=g, dtype=torch.uint8)


def export_torchscript(pipe: AnomalyPipeline, path: str | Path) -> Path:
    """Trace the fixed-size core, script the size-dynamic wrapper around it, save to `path`."""
    path = Path(path)
    recipe = json.dumps(pipe.recipe())
    pipe = copy.deepcopy(pipe).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = pipe.preprocess(_example(pipe))
        pipe.core = torch.jit.trace(pipe.core, x, check_trace=False)
        try:
            scripted = torch.jit.script(pipe)
        except Exception as exc:
            raise ExportError(f"TorchScript export of {type(pipe.model).__name__} failed: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path), _extra_files={"fovea.json": recipe})
    return path


def export_onnx(pipe: AnomalyPipeline, path: str | Path, opset: int = 18) -> Path:
    """Export with the dynamo exporter; H and W of the input stay dynamic."""
    path = Path(path)
    pipe = copy.deepcopy(pipe).eval()
    example = _example(pipe, pipe.input_h + 8, pipe.input_w + 16)
    h, w = torch.export.Dim("height", min=16, max=8192), torch.export.Dim("width", min=16, max=8192)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                pipe, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                output_names=["score", "anomaly_map", "raw_score"],
                dynamic_shapes={"images": {1: h, 2: w}}, verbose=False,
            )
            program.save(str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(pipe.model).__name__} failed: {exc}") from exc
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps(pipe.recipe(), indent=2))
    return path


def export(pipe: AnomalyPipeline, out_dir: str | Path, formats=FORMATS, name: str = "model") -> dict[str, Path]:
    """Write every requested format into `out_dir`; returns {format: path}."""
    out = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}. Fix: choose from {FORMATS}.")
        target = Path(out_dir) / f"{name}{SUFFIX[fmt]}"
        out[fmt] = export_torchscript(pipe, target) if fmt == "torchscript" else export_onnx(pipe, target)
    return out
