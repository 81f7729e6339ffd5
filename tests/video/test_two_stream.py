"""Optical flow recovers a known translation; quantisation follows MMAction2's mapping; the flow
stream's cross-modality init and late fusion follow their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fovea.models.video as V
from fovea.errors import ConfigError
from fovea.models.video.tsn import cross_modality_conv
from fovea.video.two_stream import LateFusion, dequantize_flow, optical_flow, quantize_flow, stacked_flow


def _texture_pair(dx: int, dy: int):
    import cv2

    noise = np.random.default_rng(0).uniform(0, 255, (96, 96)).astype(np.float32)
    img = np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 4 - 384, 0, 255).astype(np.uint8)   # smooth texture
    nxt = np.roll(img, (dy, dx), axis=(0, 1))
    return img, nxt


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_flow_recovers_a_known_translation(method):
    a, b = _texture_pair(3, -2)
    flow = optical_flow(a, b, method)[16:-16, 16:-16]                # away from the wrapped border
    assert np.median(flow[..., 0]) == pytest.approx(3, abs=0.25)
    assert np.median(flow[..., 1]) == pytest.approx(-2, abs=0.25)


def test_quantisation_maps_plus_minus_20_px_to_0_255():
    f = np.array([[[-25.0, -20.0], [0.0, 20.0]]], np.float32)
    assert quantize_flow(f).tolist() == [[[0, 0], [128, 255]]]
    x = np.linspace(-20, 20, 101, dtype=np.float32).reshape(1, -1, 1).repeat(2, 2)
    assert np.abs(dequantize_flow(quantize_flow(x)) - x).max() <= 20 / 255 + 1e-4      # half a step, float32 rounding


def test_stacked_flow_layout():
    a, b = _texture_pair(2, 0)
    frames = np.stack([a, b, np.roll(b, 2, axis=1)])
    st = stacked_flow(frames, 0, length=2, method="farneback")
    assert st.shape == (4, 96, 96) and st.dtype == np.uint8
    assert abs(np.median(dequantize_flow(st[0])[16:-16, 16:-16]) - 2) < 0.3      # x of pair 1
    with pytest.raises(ConfigError, match="outside"):
        stacked_flow(frames, 1, length=2)


def test_cross_modality_init_and_late_fusion():
    conv = torch.nn.Conv2d(3, 8, 3)
    new = cross_modality_conv(conv, 10)
    assert new.weight.shape == (8, 10, 3, 3)
    assert torch.allclose(new.weight[:, 7], conv.weight.mean(1))
    rgb = V.create_model("tsn_lite0", num_classes=4, weights="random").eval()
    flow = V.create_model("tsn_lite0", num_classes=4, weights="random", in_channels=10).eval()
    fused = LateFusion(rgb, flow, (1.0, 1.5)).eval()
    x, f = torch.randn(1, 3, 2, 64, 64), torch.randn(1, 10, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, f), rgb(x) + 1.5 * flow(f))
