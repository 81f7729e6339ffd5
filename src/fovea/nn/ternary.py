"""1.58-bit (ternary) layers: BitNet b1.58 BitLinear and a ternary conv, trained straight-through.

Formulas (BitNet b1.58, as microsoft/BitNet and HF transformers' `BitLinear` compute them):

- weights, one scale per tensor: s_w = mean|W| clamped >= 1e-5; W_q = clamp(round(W / s_w), -1, 1);
  the layer computes with W_q * s_w.
- activations, int8 per token (absmax over the last dim, i.e. the input features of one token):
  s_x = 127 / max|x| with max|x| clamped >= 1e-5; x_q = clamp(round(x * s_x), -128, 127); the layer
  computes with x_q / s_x.
- y = (x_q W_q^T) * s_w / s_x + b, i.e. F.linear on the fake-quantised tensors.

Training passes gradients straight through both roundings (STE: d fake_quant(v) / dv = 1), so the
fp32 weights stay the master copy and every forward re-quantises them (HF `online_quant=True`).
For a conv the "token" is one pixel: activations are scaled per (batch, y, x) over the input
channels, so a 1x1 conv equals BitLinear applied per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EPS",
    "BitConv2d",
    "BitLinear",
    "BitLinear2d",
    "absmax_int8",
    "absmean_ternary",
    "fake_quant_activations",
    "fake_quant_weights",
]

EPS = 1e-5  # the reference clamps both denominators at 1e-5


def absmean_ternary(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary codes and per-tensor scale of a weight of any shape.

    Returns (codes, scale): codes int8 in {-1, 0, 1} with weight's shape, scale a 0-d fp32 tensor
    mean|W| (clamped >= 1e-5), so weight ~= codes * scale.
    """
    scale = weight.detach().abs().mean().clamp(min=EPS).float()
    codes = (weight.detach().float() / scale).round().clamp(-1, 1).to(torch.int8)
    return codes, scale


def absmax_int8(x: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 codes of activations x (..., K) and their scales s_x = 127 / max|x|.

    Returns (codes int8 same shape as x, s_x fp32 with `dim` kept as size 1); x ~= codes / s_x.
    """
    xd = x.detach().float()
    s_x = 127.0 / xd.abs().amax(dim=dim, keepdim=True).clamp(min=EPS)
    codes = (xd * s_x).round().clamp(-128, 127).to(torch.int8)
    return codes, s_x


def fake_quant_weights(weight: torch.Tensor) -> torch.Tensor:
    """W_q * s_w in weight's dtype, with a straight-through gradient to weight."""
    codes, scale = absmean_ternary(weight)
    dequant = (codes.float() * scale).to(weight.dtype)
    return weight + (dequant - weight).detach()


def fake_quant_activations(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x_q / s_x per token along `dim`, with a straight-through gradient to x."""
    codes, s_x = absmax_int8(x, dim=dim)
    dequant = (codes.float() / s_x).to(x.dtype)
    return x + (dequant - x).detach()


class BitLinear(nn.Linear):
    """nn.Linear with ternary weights and int8 per-token activations (BitNet b1.58), STE-trained.

    Input (..., in_features) -> (..., out_features). `quantize_activations=False` keeps the input
    in float (weight-only ternary). The state dict equals nn.Linear's, so a float checkpoint loads.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 quantize_activations: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.quantize_activations = quantize_activations

    @classmethod
    def from_linear(cls, linear: nn.Linear, quantize_activations: bool = True) -> BitLinear:
        """A BitLinear sharing `linear`'s weight and bias Parameters (no copy)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.quantize_activations = quantize_activations
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_activations:
            x = fake_quant_activations(x, dim=-1)
        return F.linear(x, fake_quant_weights(self.weight), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", quantize_activations={self.quantize_activations}"


class BitLinear2d(BitLinear):
    """BitLinear applied per pixel of a (B, C_in, H, W) map -> (B, C_out, H, W) (VMamba's `Linear2d`).

    Weight in nn.Linear layout (out, in); activations are scaled per pixel over the channels.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_activations:
            x = fake_quant_activations(x, dim=1)
        return F.conv2d(x, fake_quant_weights(self.weight)[:, :, None, None], self.bias)


class BitConv2d(nn.Conv2d):
    """nn.Conv2d with ternary weights (one scale per tensor) and int8 activations per pixel.

    Input (B, C_in, H, W) -> (B, C_out, H', W'). Activation scales are taken over the channels of
    each input pixel (the conv's "token"); padding zeros stay exactly zero after quantization.
    """

    def __init__(self, *args, quantize_activations: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.quantize_activations = quantize_activations

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, quantize_activations: bool = True) -> BitConv2d:
        """A BitConv2d sharing `conv`'s Parameters and hyper-parameters (no copy)."""
        layer = cls.__new__(cls)
        layer.__dict__.update(conv.__dict__)  # hyper-parameters, hooks, _parameters dict (shared)
        layer._parameters = dict(conv._parameters)
        layer._buffers = dict(conv._buffers)
        layer._modules = dict(conv._modules)
        layer.quantize_activations = quantize_activations
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_activations:
            x = fake_quant_activations(x, dim=1)
        return self._conv_forward(x, fake_quant_weights(self.weight), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", quantize_activations={self.quantize_activations}"
