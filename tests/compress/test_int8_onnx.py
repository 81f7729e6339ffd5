"""int8 static ONNX quantization: a small uint8-in conv net, quantized output vs the fp32 graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from fovea.compress.int8 import quantize_onnx_static
from fovea.errors import ConfigError, ExportError


class _Net(nn.Module):
    """uint8 (B, H, W, 3) -> (B, 4): the same shape contract as fovea's exported pipelines."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, images):
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_quantized_graph_is_int8_and_close(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    net = _Net().eval()
    example = torch.randint(0, 256, (1, 24, 24, 3), dtype=torch.uint8)
    fp32 = tmp_path / "m.onnx"
    torch.onnx.export(net, (example,), str(fp32), input_names=["images"], output_names=["out"], dynamo=False,
                      dynamic_axes={"images": {0: "batch"}})
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(16)]
    int8 = quantize_onnx_static(fp32, tmp_path / "m.int8.onnx", calib)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    test = rng.integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": test})[0]
            for p in (fp32, int8)]
    with torch.no_grad():
        ref = net(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-5)  # the fp32 graph is the torch model
    scale = np.abs(ref).max()
    assert np.abs(outs[1] - ref).max() < 0.05 * scale  # 8-bit weights and activations: ~1 % of the range


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        quantize_onnx_static(tmp_path / "none.onnx", tmp_path / "o.onnx", [np.zeros((8, 8, 3), np.uint8)])
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="calibration"):
        quantize_onnx_static(tmp_path / "x.onnx", tmp_path / "o.onnx", [])


def _conv_weight_sources(path):
    """For each Conv node in graph order: 'int8' when its weight comes through a DequantizeLinear, else 'fp32'."""
    graph = onnx.load(str(path)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    return ["int8" if producers.get(n.input[1]) == "DequantizeLinear" else "fp32"
            for n in graph.node if n.op_type == "Conv"]


def test_stem_kept_float_by_choice_and_recipe_metadata_carried_over(tmp_path):
    torch.manual_seed(1)
    net = _Net().eval()
    fp32 = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.randint(0, 256, (1, 24, 24, 3), dtype=torch.uint8),), str(fp32),
                      input_names=["images"], output_names=["out"], dynamo=False)
    model = onnx.load(str(fp32))
    model.metadata_props.add(key="fovea.recipe", value='{"task": "x"}')
    onnx.save(model, str(fp32))
    calib = [np.random.default_rng(i).integers(0, 256, (24, 24, 3), dtype=np.uint8) for i in range(4)]
    kept = quantize_onnx_static(fp32, tmp_path / "kept.onnx", calib)
    full = quantize_onnx_static(fp32, tmp_path / "full.onnx", calib, keep_first_conv_float=False)
    assert _conv_weight_sources(kept) == ["fp32", "int8"]
    assert _conv_weight_sources(full) == ["int8", "int8"]
    meta = {p.key: p.value for p in onnx.load(str(kept)).metadata_props}
    assert meta["fovea.recipe"] == '{"task": "x"}'
    with pytest.raises(ConfigError, match="calibration='median'"):
        quantize_onnx_static(fp32, tmp_path / "o.onnx", calib, calibration="median")
