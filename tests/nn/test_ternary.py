"""BitLinear / BitConv2d against hand-computed BitNet b1.58 cases and per-pixel loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fovea.nn.ternary import EPS, BitConv2d, BitLinear, absmax_int8, absmean_ternary


def test_bitlinear_hand_computed_case():
    # W = [0.5, -1, 0.1, 2]: mean|W| = 0.9; W / 0.9 = [0.56, -1.11, 0.11, 2.22] -> [1, -1, 0, 1].
    # x = [1, -2, 0.5, 4]: s_x = 127 / 4 = 31.75; x * s_x = [31.75, -63.5, 15.875, 127] -> [32, -64, 16, 127]
    # (round half to even); y = (32 + 64 + 0 + 127) * 0.9 / 31.75 + 0.25.
    layer = BitLinear(4, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0, 0.1, 2.0]]))
        layer.bias.fill_(0.25)
    codes, scale = absmean_ternary(layer.weight)
    assert codes.tolist() == [[1, -1, 0, 1]] and scale.item() == pytest.approx(0.9)
    xq, s_x = absmax_int8(torch.tensor([[1.0, -2.0, 0.5, 4.0]]))
    assert xq.tolist() == [[32, -64, 16, 127]] and s_x.item() == pytest.approx(31.75)
    y = layer(torch.tensor([[1.0, -2.0, 0.5, 4.0]]))
    assert y.item() == pytest.approx(223 * 0.9 / 31.75 + 0.25, rel=1e-6)


def test_denominators_are_clamped_not_nan():
    layer = BitLinear(3, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([1.0, -2.0]))
    assert absmean_ternary(layer.weight)[1].item() == pytest.approx(EPS)
    y = layer(torch.zeros(5, 3))  # max|x| = 0 and mean|W| = 0 both hit the 1e-5 clamp
    assert torch.isfinite(y).all() and torch.equal(y, torch.tensor([[1.0, -2.0]] * 5))


def test_codes_are_ternary_and_int8_range():
    torch.manual_seed(0)
    codes, _ = absmean_ternary(torch.randn(64, 33) * 5)
    assert set(codes.unique().tolist()) == {-1, 0, 1}
    xq, _ = absmax_int8(torch.randn(7, 40) * 100)
    assert xq.min() >= -128 and xq.max() <= 127 and (xq.abs().amax(-1) == 127).all()


def test_straight_through_gradients():
    torch.manual_seed(1)
    layer = BitLinear(6, 4, bias=False)
    x = torch.randn(3, 6, requires_grad=True)
    layer(x).sum().backward()
    codes, scale = absmean_ternary(layer.weight)
    xq, s_x = absmax_int8(x)
    x_fq, w_fq = xq.float() / s_x, codes.float() * scale
    # STE: d/dW = grad_out^T x_fq and d/dx = grad_out W_fq, as if both roundings were identities
    torch.testing.assert_close(layer.weight.grad, torch.ones(3, 4).T @ x_fq, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, torch.ones(3, 4) @ w_fq, rtol=1e-6, atol=1e-6)


def test_bitconv_scales_activations_per_pixel():
    torch.manual_seed(2)
    conv = BitConv2d(3, 5, 3, padding=1, bias=True)
    x = torch.randn(2, 3, 6, 7)
    y = conv(x)
    # independent loop: quantise every pixel's channel vector on its own, then a plain conv
    xq = torch.empty_like(x)
    for b in range(2):
        for i in range(6):
            for j in range(7):
                v = x[b, :, i, j]
                s = 127.0 / max(v.abs().max().item(), EPS)
                xq[b, :, i, j] = torch.clamp(torch.round(v * s), -128, 127) / s
    w = conv.weight.detach()
    m = max(w.abs().mean().item(), EPS)
    wq = torch.clamp(torch.round(w / m), -1, 1) * m
    torch.testing.assert_close(y, F.conv2d(xq, wq, conv.bias, padding=1), rtol=1e-5, atol=1e-5)


def test_weight_only_mode_keeps_float_activations():
    torch.manual_seed(3)
    layer = BitLinear(8, 3, bias=False, quantize_activations=False)
    x = torch.randn(2, 8)
    codes, scale = absmean_ternary(layer.weight)
    torch.testing.assert_close(layer(x), x @ (codes.float() * scale).T, rtol=1e-6, atol=1e-6)
