"""ONNX export of the 2D-per-frame recognizers (TSN, TSM): input a normalised clip
(B, 3, T, H, W) float32 with T fixed (the shift needs it) and the batch dynamic; output logits (B, K).
The dynamo exporter; `onnx_predict` runs the file with onnxruntime (parity is tested)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from fovea.errors import ExportError


def export_clip_onnx(model: torch.nn.Module, path: str | Path, num_frames: int, height: int, width: int,
                     opset: int = 18) -> Path:
    """Write `model` (clip -> logits) to an ONNX file; raises ExportError naming the model and file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(2, 3, num_frames, height, width)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=["clip"],
                                        output_names=["logits"],
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
                                        verbose=False)
            program.save(str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(model).__name__} to {path} failed: {exc}") from exc
    return path


def onnx_predict(path: str | Path, clip: np.ndarray) -> np.ndarray:
    """Logits (B, K) of an exported recognizer for a clip batch (B, 3, T, H, W) float32."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(clip, dtype=np.float32)})[0]
