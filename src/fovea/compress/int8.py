"""int8 post-training static quantization of exported fovea ONNX models with ONNX Runtime.

`quantize_onnx_static(model, out, calibration_images)` runs the exported graph (uint8 images in,
as every fovea export) over calibration images -- normal images for an anomaly model -- to fix the
activation ranges, then writes a QDQ model: weights int8 per output channel, activations uint8
(the U8S8 form ONNX Runtime's x86 VNNI kernels run). `op_types` limits which operators are
quantized: an anomaly model keeps its memory-bank distance MatMul in float by quantizing only
"Conv" (the backbone).

The first conv (the stem, reading the normalised image) stays fp32 by default: its uint8 input
grid does not line up with the image's own 256 levels after mean/std normalisation, and on the
apple classifier quantizing it cost 4.4 accuracy points of the 4.8 lost in all (benchmarks/compress.py
int8 section). The fovea recipe in the ONNX metadata is carried over, so `fovea.load_predictor`
opens the int8 file like the fp32 one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fovea.errors import ConfigError, ExportError

__all__ = ["quantize_onnx_static"]


class _Reader:
    """onnxruntime CalibrationDataReader over uint8 (H, W, 3) images, one image per batch."""

    def __init__(self, input_name: str, images: Iterable[np.ndarray]):
        self.input_name = input_name
        self.items = iter([np.ascontiguousarray(im, dtype=np.uint8)[None] for im in images])

    def get_next(self):
        item = next(self.items, None)
        return None if item is None else {self.input_name: item}


def _first_conv(model) -> list[str]:
    """Name of the first Conv node in graph order (the stem), as a one-element list (empty if none)."""
    return next(([n.name] for n in model.graph.node if n.op_type == "Conv"), [])


def _depthwise_convs(model) -> list[str]:
    """Names of grouped (depthwise) Conv nodes: one 3x3 filter per channel quantizes badly per tensor."""
    names = []
    for node in model.graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and groups > 1:
            names.append(node.name)
    return names


def quantize_onnx_static(model_path, out_path, calibration_images: Sequence[np.ndarray],
                         op_types: Sequence[str] | None = ("Conv", "MatMul", "Gemm"),
                         per_channel: bool = True, keep_depthwise_float: bool = False,
                         keep_first_conv_float: bool = True, calibration: str = "minmax") -> Path:
    """Write the int8 (QDQ) version of the fovea ONNX file `model_path` to `out_path`; returns out_path.

    calibration_images: uint8 (H, W, 3) arrays (a few dozen normal images are enough).
    keep_first_conv_float: leave the stem conv in fp32 (see the module note; it is one small layer).
    keep_depthwise_float: leave grouped convs in fp32 as well (MobileNet/EfficientNet-style nets).
    calibration: "minmax", "entropy" or "percentile" (99.999 %) activation ranges.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model_path, out_path = Path(model_path), Path(out_path)
    if not model_path.is_file():
        raise ExportError(f"quantize_onnx_static: {model_path} does not exist; export the model first")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibration not in methods:
        raise ConfigError(f"quantize_onnx_static({model_path}): calibration={calibration!r}; use one of {', '.join(methods)}")
    if len(calibration_images) == 0:
        raise ConfigError(f"quantize_onnx_static({model_path}): no calibration images; pass a few dozen normal images")
    source = onnx.load(str(model_path), load_external_data=False)
    input_name = source.graph.input[0].name
    prepared = out_path.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        exclude = (_first_conv(graph) if keep_first_conv_float else []) + (
            _depthwise_convs(graph) if keep_depthwise_float else [])
        quantize_static(str(prepared), str(out_path), _Reader(input_name, calibration_images),
                        nodes_to_exclude=exclude,
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        op_types_to_quantize=list(op_types) if op_types else None,
                        calibrate_method=methods[calibration],
                        extra_options={"CalibPercentile": 99.999} if calibration == "percentile" else {})
        _copy_metadata(source, out_path)
    except Exception as exc:
        raise ExportError(f"int8 quantization of {model_path} failed: {exc}") from exc
    finally:
        prepared.unlink(missing_ok=True)
    return out_path


def _copy_metadata(source, out_path: Path) -> None:
    """Carry the source model's metadata_props (the fovea recipe) into the quantized file."""
    import onnx

    if not source.metadata_props:
        return
    model = onnx.load(str(out_path))
    have = {p.key for p in model.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have:
            model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(out_path))
