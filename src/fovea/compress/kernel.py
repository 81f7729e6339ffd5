"""Inference with packed ternary weights: the packed x int8 product and the packed layers.

`packed_ternary_linear` quantises activations per token (int8 absmax, as `BitLinear`), forms the
exact integer sums sum_k w[n, k] x_q[m, k] with the compiled kernel (`_native.py`) or, as a
fallback, an fp32 matmul of the unpacked codes (exact: every partial sum is an integer below
2^24 for K <= 131072), and rescales y = acc * s_w / s_x + b. Both backends produce bit-identical
results; `backend="auto"` picks the compiled one and falls back (with one warning) when no
compiler works.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from fovea.compress import _native
from fovea.compress.packing import packed_rows, unpack_ternary
from fovea.nn.ternary import absmax_int8

__all__ = ["PackedBitConv2d", "PackedBitLinear", "native_available", "packed_ternary_linear", "ternary_int_sums"]

_EXACT_K = 1 << 17  # fp32 holds every integer sum of K products |2 * 128| below 2^24 up to here
_NATIVE_STATE: dict[str, object] = {}


def native_available() -> bool:
    """True when the C kernel compiled and loaded (tried once per process)."""
    if "ok" not in _NATIVE_STATE:
        try:
            _native.load()
            _NATIVE_STATE["ok"] = True
        except (RuntimeError, OSError) as exc:
            _NATIVE_STATE["ok"] = False
            _NATIVE_STATE["error"] = str(exc)
    return bool(_NATIVE_STATE["ok"])


def _check_backend(backend: str) -> None:
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")


def _resolve_auto() -> str:
    """"native" when the C kernel loads, else "torch" (warning once, naming the compiler error)."""
    if native_available():
        return "native"
    if not _NATIVE_STATE.get("warned"):
        warnings.warn(f"fovea ternary kernel unavailable, using the PyTorch fallback: {_NATIVE_STATE['error']}",
                      stacklevel=3)
        _NATIVE_STATE["warned"] = True
    return "torch"


def ternary_int_sums(packed: torch.Tensor, out_features: int, x_codes: torch.Tensor,
                     backend: str = "auto") -> torch.Tensor:
    """acc (M, N) = x_codes (M, K) int8 @ W^T for the packed ternary W (N, K); exact integers.

    backend: "native" (the C kernel; raises if it cannot be built), "torch" (unpack + fp32
    matmul, returned as fp32 holding integers) or "auto". Native returns int32.
    """
    _check_backend(backend)
    if packed.shape[0] != packed_rows(out_features) or packed.shape[1] != x_codes.shape[1]:
        raise ValueError(f"packed {tuple(packed.shape)} does not fit out_features={out_features} "
                         f"and activations {tuple(x_codes.shape)}")
    if backend == "auto":
        backend = _resolve_auto()
    if backend == "native":
        return _native.ternary_gemm_int32(packed, x_codes)[:, :out_features]
    if x_codes.shape[1] > _EXACT_K:
        raise ValueError(f"the torch fallback is exact only for K <= {_EXACT_K}, got {x_codes.shape[1]}")
    codes = unpack_ternary(packed, out_features).float()
    return x_codes.float() @ codes.T


def packed_ternary_linear(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, out_features: int,
                          bias: torch.Tensor | None = None, backend: str = "auto",
                          tiles: torch.Tensor | None = None) -> torch.Tensor:
    """BitLinear inference from packed weights: x (..., K) float -> (..., N) fp32.

    scale is the per-tensor absmean s_w; activations are quantised per token like `BitLinear`.
    tiles: `_native.make_tiles(packed, N)` (the VNNI register-tile layout): used for 1 token and from
    `_native.TILE_MIN_TOKENS` on (the row loop is faster for 2-3 tokens of a wide layer).
    """
    _check_backend(backend)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).float()
    if backend == "auto":
        backend = _resolve_auto()
    if backend == "native":  # quantise, multiply and rescale in one C call (same arithmetic as below)
        if packed.shape[0] != packed_rows(out_features) or packed.shape[1] != x2.shape[1]:
            raise ValueError(f"packed {tuple(packed.shape)} does not fit out_features={out_features} "
                             f"and activations {tuple(x2.shape)}")
        b = None if bias is None else bias.float()
        if tiles is not None and (x2.shape[0] == 1 or x2.shape[0] >= _native.TILE_MIN_TOKENS):
            y = _native.ternary_linear_tiles(x2, tiles, float(scale), out_features, b)
        else:
            y = _native.ternary_linear(x2, packed, float(scale), out_features, b)
        return y.reshape(*lead, out_features)
    x_codes, s_x = absmax_int8(x2, dim=-1)
    acc = ternary_int_sums(packed, out_features, x_codes, backend=backend).float()
    y = acc * (scale.float() / s_x)
    if bias is not None:
        y = y + bias.float()
    return y.reshape(*lead, out_features)


def _cached_plan(module: nn.Module, out_features: int, backend: str) -> _native.LinearPlan | None:
    """module's single-thread C plan over its `packed` / `scale` / `bias` buffers, rebuilt when one of
    them changes; None for the torch backend, without the kernel, or when torch runs several threads
    (then the row-split path of `packed_ternary_linear` runs)."""
    if backend == "torch" or torch.get_num_threads() != 1 or (backend == "auto" and not native_available()):
        return None
    key = _plan_key(module)
    if getattr(module, "_plan_key", None) != key:
        module._plan_cache = _native.LinearPlan(module.packed, module.scale, out_features, module.bias)
        module._plan_key = key
    return module._plan_cache


def _plan_key(module: nn.Module) -> tuple:
    """Identity and in-place version of the buffers a plan was built from (the plan keeps them alive, so an id
    cannot be reused while it exists): a new tensor or an in-place change gives a new key."""
    p, s, b = module.packed, module.scale, module.bias
    return id(p), p._version, id(s), s._version, id(b), -1 if b is None else b._version


class PackedBitLinear(nn.Module):
    """Frozen BitLinear holding 2-bit packed weights (R, K) uint8 and the fp32 scale as buffers.

    Input (..., in_features) -> (..., out_features), or with `channels_first` (B, C_in, H, W) ->
    (B, C_out, H, W). `backend` as in `ternary_int_sums`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, backend: str = "auto",
                 quantize_activations: bool = True, channels_first: bool = False):
        super().__init__()
        self.channels_first = channels_first  # (B, C, H, W) in and out, per pixel (VMamba's Linear2d)
        self.in_features, self.out_features, self.backend = in_features, out_features, backend
        self.quantize_activations = quantize_activations
        self.register_buffer("packed", torch.zeros(packed_rows(out_features), in_features, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.__dict__.get("_plan_cache")
        if (plan is not None and x.dtype == torch.float32 and not self.channels_first and x.is_contiguous()
                and self.backend != "torch" and self._plan_key == _plan_key(self) and torch.get_num_threads() == 1):
            return plan(x)  # the common case, with the least Python per call: one torch.empty, one ctypes call
        if self.channels_first:
            return self._forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quantize_activations:  # weight-only ternary: float activations, unpacked weight
            weight = unpack_ternary(self.packed, self.out_features).to(x.dtype) * self.scale.to(x.dtype)
            return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))
        plan = self._plan()
        if plan is not None:  # one thread: one ctypes call, no per-call Python arithmetic
            x2 = x.reshape(-1, self.in_features)
            if x2.dtype != torch.float32 or not x2.is_contiguous():
                x2 = x2.float().contiguous()
            return plan(x2).reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        tiles = self._tiles() if self.backend != "torch" else None
        y = packed_ternary_linear(x, self.packed, self.scale, self.out_features, self.bias, self.backend, tiles)
        return y.to(x.dtype)

    def _plan(self) -> _native.LinearPlan | None:
        return _cached_plan(self, self.out_features, self.backend)

    def _tiles(self) -> torch.Tensor | None:
        """The VNNI tile layout of `packed`, rebuilt when `packed` changes; None without the tile kernel."""
        if not native_available() or not _native.has_tiles():
            return None
        key = (self.packed.data_ptr(), self.packed._version)
        if getattr(self, "_tile_key", None) != key:
            self._tile_cache = _native.make_tiles(self.packed, self.out_features)
            self._tile_key = key
        return self._tile_cache

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class PackedBitConv2d(nn.Module):
    """Frozen BitConv2d holding packed weights (R, C_in/groups * kh * kw): (B, C_in, H, W) -> (B, C_out, H', W').

    Activations are quantised per pixel (as `BitConv2d`). A pointwise conv (1x1, stride 1, no padding,
    groups 1) is BitLinear per pixel and runs the integer kernel on the (B*H*W, C_in) pixels (its output
    is channels-last in memory, so the next pointwise conv reads it without a copy); other convs unpack
    the weight for `F.conv2d` (the saving there is storage).
    """

    def __init__(self, conv: nn.Conv2d, quantize_activations: bool = True, backend: str = "auto"):
        super().__init__()
        _check_backend(backend)
        self.conv_args = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        self.weight_shape = tuple(conv.weight.shape)
        fan_in = self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3]
        self.register_buffer("packed", torch.zeros(packed_rows(self.weight_shape[0]), fan_in, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("bias", None if conv.bias is None else torch.zeros(self.weight_shape[0]))
        self.padding_mode = conv.padding_mode
        self.quantize_activations = quantize_activations
        self.backend = backend
        self.pointwise = (self.weight_shape[2:] == (1, 1) and tuple(conv.stride) == (1, 1) and conv.groups == 1
                          and conv.padding in ((0, 0), "valid", "same"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise NotImplementedError("PackedBitConv2d supports zero padding only")
        plan = _cached_plan(self, self.weight_shape[0], self.backend) if self.pointwise and self.quantize_activations else None
        if plan is not None:
            b, c, h, w = x.shape
            pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view when x is channels-last in memory
            if pixels.dtype != torch.float32 or not pixels.is_contiguous():
                pixels = pixels.float().contiguous()
            return plan(pixels).view(b, h, w, -1).permute(0, 3, 1, 2).to(x.dtype)
        if self.quantize_activations:
            codes, s_x = absmax_int8(x, dim=1)
            x = (codes.float() / s_x).to(x.dtype)
        weight = (unpack_ternary(self.packed, self.weight_shape[0]).float() * self.scale)
        return F.conv2d(x, weight.reshape(self.weight_shape).to(x.dtype), self.bias, **self.conv_args)
