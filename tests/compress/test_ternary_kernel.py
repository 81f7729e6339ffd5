"""The packed ternary x int8 kernel against an int64 matmul of the unpacked codes, every ISA path."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from fovea.compress import _native, native_available, pack_ternary, packed_ternary_linear
from fovea.compress.kernel import ternary_int_sums
from fovea.nn.ternary import BitLinear, absmean_ternary

HAVE_CC = any(shutil.which(c) for c in (os.environ.get("CC") or "gcc", "gcc", "cc", "clang"))
SHAPES = [(1, 1, 1), (7, 5, 3), (13, 130, 5), (64, 256, 9), (30, 200, 4)]  # (N, K, M): odd tails everywhere


def _case(n, k, m, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (n, k), generator=g).to(torch.int8)
    x = torch.randint(-128, 128, (m, k), generator=g).to(torch.int8)
    return codes, x, x.long() @ codes.long().T  # int64 reference


def test_compiled_kernel_builds_when_a_compiler_exists():
    if not HAVE_CC:
        pytest.skip("no C compiler on this machine: only the PyTorch fallback can run")
    assert native_available(), "a C compiler exists but the ternary kernel did not build"
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if " avx512_vnni" in flags and " avx512bw" in flags:
        assert _native.isa() == "avx512-vnni"
    elif " avx2" in flags:
        assert _native.isa() == "avx2"


@pytest.mark.parametrize("variant", [None, ["-mavx2"], []], ids=["native", "avx2", "scalar"])
def test_every_compiled_inner_loop_is_exact(variant):
    if not HAVE_CC:
        pytest.skip("no C compiler on this machine")
    lib = _native.load() if variant is None else _native.load_variant(variant)
    if variant == ["-mavx2"]:
        assert _native.isa(lib) == "avx2"
    if variant == []:
        assert _native.isa(lib) == "scalar"
    for seed, (n, k, m) in enumerate(SHAPES):
        codes, x, ref = _case(n, k, m, seed)
        acc = _native.ternary_gemm_int32(pack_ternary(codes), x, lib=lib)[:, :n]
        assert torch.equal(acc.long(), ref), (variant, n, k, m)


def test_extreme_values_do_not_saturate():
    # all weights -1 and all activations -128: every product is +128, sums reach 128 * K
    k = 1000
    codes = -torch.ones(5, k, dtype=torch.int8)
    x = torch.full((3, k), -128, dtype=torch.int8)
    for backend in (["native"] if HAVE_CC else []) + ["torch"]:
        acc = ternary_int_sums(pack_ternary(codes), 5, x, backend=backend)
        assert torch.equal(acc.long(), torch.full((3, 5), 128 * k)), backend


def test_torch_fallback_is_exact_and_threads_split_rows():
    codes, x, ref = _case(37, 300, 6, 11)
    assert torch.equal(ternary_int_sums(pack_ternary(codes), 37, x, backend="torch").long(), ref)
    if HAVE_CC:
        old = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            assert torch.equal(ternary_int_sums(pack_ternary(codes), 37, x, backend="native").long(), ref)
        finally:
            torch.set_num_threads(old)


def test_packed_linear_matches_bitlinear():
    torch.manual_seed(4)
    layer = BitLinear(96, 40)
    x = torch.randn(2, 3, 96)
    codes, scale = absmean_ternary(layer.weight)
    packed = pack_ternary(codes)
    expected = layer(x).detach()
    backends = (["native"] if HAVE_CC else []) + ["torch"]
    outs = [packed_ternary_linear(x, packed, scale, 40, layer.bias.detach(), backend=b) for b in backends]
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if len(outs) == 2:
        assert torch.equal(outs[0], outs[1])  # same integers, same rescaling: bit-identical


def test_shape_mismatch_is_a_clear_error():
    packed = pack_ternary(torch.zeros(8, 16, dtype=torch.int8))
    with pytest.raises(ValueError, match="does not fit"):
        ternary_int_sums(packed, 8, torch.zeros(2, 15, dtype=torch.int8))


def test_vnni_tile_kernel_is_bit_identical_to_the_fallback():
    if not HAVE_CC or not native_available() or not _native.has_tiles():
        pytest.skip("no AVX512-VNNI tile kernel on this CPU")
    g = torch.Generator().manual_seed(7)
    for n, k, m in [(1, 1, 1), (7, 5, 3), (33, 70, 5), (16, 16, 4), (40, 200, 9)]:
        codes = torch.randint(-1, 2, (n, k), generator=g).to(torch.int8)
        x, bias = torch.randn(m, k, generator=g) * 3, torch.randn(n, generator=g)
        packed = pack_ternary(codes)
        scale = torch.tensor(0.37)
        ref = packed_ternary_linear(x, packed, scale, n, bias, backend="torch")
        old = torch.get_num_threads()
        try:
            for threads in (1, 2):  # one C call, and the quantise + row-block thread split
                torch.set_num_threads(threads)
                tiled = packed_ternary_linear(x, packed, scale, n, bias, backend="native",
                                              tiles=_native.make_tiles(packed, n))
                assert torch.equal(tiled, ref), (n, k, m, threads)
        finally:
            torch.set_num_threads(old)


def test_packed_module_uses_cached_tiles_and_matches():
    from fovea.compress.kernel import PackedBitLinear

    torch.manual_seed(8)
    layer = PackedBitLinear(48, 20)
    codes, scale = absmean_ternary(torch.randn(20, 48))
    layer.packed.copy_(pack_ternary(codes))
    layer.scale.fill_(scale)
    x = torch.randn(3, 48)
    ref = packed_ternary_linear(x, layer.packed, layer.scale, 20, layer.bias, backend="torch")
    assert torch.equal(layer(x), ref)
    layer.packed.copy_(pack_ternary(-codes))  # new weights: the tile cache must follow
    assert torch.equal(layer(x), packed_ternary_linear(x, layer.packed, layer.scale, 20, layer.bias, backend="torch"))
