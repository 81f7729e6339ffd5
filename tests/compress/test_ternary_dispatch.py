"""The whole packed layer (quantise + product + rescale in one C call) on every inner loop, the ISA
override by environment variable, and the pointwise-conv kernel path, against the PyTorch fallback
(unpacked codes, fp32 matmul of exact integers) and against BitConv2d."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from fovea.compress import PackedBitConv2d, PackedBitLinear, _native, pack_ternary, packed_ternary_linear
from fovea.errors import ConfigError
from fovea.nn.ternary import BitConv2d, absmean_ternary

HAVE_CC = any(shutil.which(c) for c in (os.environ.get("CC") or "gcc", "gcc", "cc", "clang"))
CPU_FLAGS = _native._cpu_flags()
# (N, K, M): K off the 8 / 16 / 64 vector widths, 1 token (tiles), 2-3 tokens (row loop), 5 (tiles + tail)
SHAPES = [(1, 1, 1), (7, 5, 3), (33, 70, 2), (40, 200, 5), (16, 129, 1)]


def _layer(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (n, k), generator=g).to(torch.int8)
    return pack_ternary(codes), torch.tensor(0.37), torch.randn(n, generator=g)


def _inputs(m, k, seed):
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(seed)) * 3
    x[0, : k // 2] = 0.0  # a half-zero row; and the last row all zero (scale clamp at 1e-5)
    if m > 1:
        x[-1] = 0.0
    return x


@pytest.mark.parametrize("variant", [None, ["-mavx2"], []], ids=["native", "avx2", "scalar"])
def test_every_inner_loop_quantises_multiplies_and_rescales_like_the_fallback(variant):
    if not HAVE_CC:
        pytest.skip("no C compiler on this machine")
    if variant == ["-mavx2"] and "avx2" not in CPU_FLAGS:
        pytest.skip("this CPU has no AVX2")
    lib = _native.load() if variant is None else _native.load_variant(variant)
    for seed, (n, k, m) in enumerate(SHAPES):
        packed, scale, bias = _layer(n, k, seed)
        x = _inputs(m, k, seed)
        ref = packed_ternary_linear(x, packed, scale, n, bias, backend="torch")
        rows = _native.ternary_linear(x, packed, float(scale), n, bias, lib=lib)
        plan = _native.LinearPlan(packed, float(scale), n, bias, lib=lib)(x)  # tiles where the library has them
        assert torch.equal(rows, ref), (variant, n, k, m)
        assert torch.equal(plan, ref), (variant, n, k, m)


def test_isa_override_makes_load_pick_the_avx2_loop(monkeypatch):
    if not HAVE_CC or "avx2" not in CPU_FLAGS:
        pytest.skip("needs a C compiler and an AVX2 CPU")
    monkeypatch.setenv("FOVEA_TERNARY_ISA", "avx2")
    monkeypatch.setattr(_native, "_LIB", None)  # as in a fresh process; restored after the test
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert _native.isa() == "avx2"
    g = torch.Generator().manual_seed(3)
    layer = PackedBitLinear(70, 33)
    layer.packed.copy_(pack_ternary(torch.randint(-1, 2, (33, 70), generator=g).to(torch.int8)))
    layer.scale.fill_(0.5)
    layer.bias.copy_(torch.randn(33, generator=g))
    for m in (1, 2, 5):
        x = torch.randn(m, 70, generator=g)
        ref = packed_ternary_linear(x, layer.packed, layer.scale, 33, layer.bias, backend="torch")
        assert torch.equal(layer(x), ref), m
    assert layer._plan_cache.lib is _native._LIB and layer._plan_cache.tiles is None  # AVX2: row loop only


def test_isa_override_the_cpu_cannot_run_is_a_hardware_error(monkeypatch):
    from fovea.errors import HardwareError

    monkeypatch.setattr(_native, "_LIB", None)
    monkeypatch.setattr(_native, "_cpu_flags", lambda: {"sse2"})  # a CPU without AVX2
    monkeypatch.setenv("FOVEA_TERNARY_ISA", "avx2")
    with pytest.raises(HardwareError, match="lacks avx2"):
        _native.load()


def test_unknown_isa_override_is_a_config_error(monkeypatch):
    monkeypatch.setenv("FOVEA_TERNARY_ISA", "avx9000")
    with pytest.raises(ConfigError, match="FOVEA_TERNARY_ISA='avx9000'.*avx2"):
        _native.requested_isa()


def test_packed_linear_plan_follows_new_weights_and_matches_fallback():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        layer = PackedBitLinear(48, 20)
        codes, scale = absmean_ternary(torch.randn(20, 48, generator=torch.Generator().manual_seed(8)))
        layer.packed.copy_(pack_ternary(codes))
        layer.scale.fill_(scale)
        x = torch.randn(2, 3, 48)
        for _ in range(2):
            ref = packed_ternary_linear(x, layer.packed, layer.scale, 20, layer.bias, backend="torch")
            assert torch.equal(layer(x), ref)
            layer.packed.copy_(pack_ternary(-codes))  # in-place change: the cached plan must follow
            layer.scale.fill_(0.25)
        layer.scale = torch.tensor(0.5)  # a new buffer object (as .to() or assignment makes)
        assert torch.equal(layer(x), packed_ternary_linear(x, layer.packed, layer.scale, 20, layer.bias, backend="torch"))
        assert layer(torch.zeros(0, 48)).shape == (0, 20)
    finally:
        torch.set_num_threads(old)


def test_pointwise_packed_conv_runs_the_kernel_and_matches_bitconv():
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(24, 10, 1)
    bit = BitConv2d.from_conv(conv)
    packed_conv = PackedBitConv2d(conv)
    codes, scale = absmean_ternary(conv.weight)
    packed_conv.packed.copy_(pack_ternary(codes.reshape(10, -1)))
    packed_conv.scale.fill_(scale)
    packed_conv.bias.copy_(conv.bias.detach())
    assert packed_conv.pointwise
    x = torch.randn(2, 24, 5, 7)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        y = packed_conv(x)
        y_cl = packed_conv(x.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(old)
    expected = bit(x).detach()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)  # exact integers vs float sums
    assert torch.equal(y, y_cl)
    if HAVE_CC:
        assert packed_conv._plan_cache is not None  # the kernel ran (not the unpack + conv2d path)
    strided = PackedBitConv2d(torch.nn.Conv2d(24, 10, 1, stride=2))
    assert not strided.pointwise
