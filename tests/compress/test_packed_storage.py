"""2-bit packing against hand-written bytes and HF transformers' pack_weights; save/load round trip."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

from fovea.compress import load_packed, pack_ternary, save_packed, ternarize, unpack_ternary
from fovea.compress.kernel import PackedBitConv2d, PackedBitLinear
from fovea.errors import CheckpointError
from fovea.nn.ternary import BitConv2d, BitLinear, absmean_ternary


def test_pack_layout_by_hand():
    # N = 5 rows -> R = 2 packed rows; byte [r, k] bits 2i..2i+1 = code (w + 1) of row r + 2i
    w = torch.tensor([[1], [0], [-1], [1], [0]], dtype=torch.int8)
    # row 0 <- rows 0, 2, 4: codes 2, 0, 1 -> 0b00_01_00_10; row 1 <- rows 1, 3: codes 1, 2 -> 0b00_00_10_01
    assert pack_ternary(w).tolist() == [[0b00010010], [0b00001001]]
    assert torch.equal(unpack_ternary(pack_ternary(w), 5), w)


@pytest.mark.slow  # importing transformers alone takes ~7 s
def test_pack_equals_transformers_pack_weights():
    bitnet = pytest.importorskip("transformers.integrations.bitnet")
    torch.manual_seed(0)
    for n in (4, 9, 16, 33):
        codes = torch.randint(-1, 2, (n, 12)).to(torch.int8)
        assert torch.equal(pack_ternary(codes), bitnet.pack_weights(codes.clone().to(torch.int32))), n


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.Flatten(),
                         nn.Linear(16 * 4 * 4, 64), nn.LayerNorm(64), nn.Linear(64, 10))


def test_ternarize_include_exclude():
    model = _model()
    report = ternarize(model, exclude=("6",))
    assert report.converted == ["0", "2", "4"] and not report.skipped
    assert isinstance(model[0], BitConv2d) and isinstance(model[4], BitLinear) and type(model[6]) is nn.Linear
    only = _model()
    assert ternarize(only, include=("4",)).converted == ["4"]
    with pytest.raises(TypeError):
        ternarize(_model(), include="4")


def test_save_load_round_trip_is_exact(tmp_path):
    model = _model()
    ternarize(model, exclude=("6",))
    x = torch.randn(2, 3, 4, 4)
    expected = model(x).detach()
    sizes = save_packed(model, tmp_path / "m.safetensors")
    fresh = _model()
    torch.nn.init.zeros_(fresh[4].weight)  # the loaded values must come from the file
    load_packed(fresh, tmp_path / "m.safetensors")
    assert isinstance(fresh[0], PackedBitConv2d) and isinstance(fresh[4], PackedBitLinear)
    for i in (0, 2, 4):
        codes, scale = absmean_ternary(model[i].weight)
        assert torch.equal(unpack_ternary(fresh[i].packed, codes.shape[0]), codes.reshape(codes.shape[0], -1))
        assert fresh[i].scale.item() == scale.item()
    assert torch.equal(fresh[6].weight, model[6].weight) and torch.equal(fresh[5].bias, model[5].bias)
    torch.testing.assert_close(fresh(x), expected, rtol=1e-4, atol=1e-5)
    # size bookkeeping from the file itself: 2 bits per weight plus one fp32 scale per layer
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        packed_bytes = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                           for k in f.keys() if k.endswith((".packed", ".scale")))
    assert sizes["packed_bytes"] == packed_bytes
    fp32 = sum(model[i].weight.numel() * 4 for i in (0, 2, 4))
    assert sizes["fp32_bytes_of_ternary"] == fp32 and fp32 / packed_bytes >= 7.7


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_packed(_model(), tmp_path / "missing.safetensors")
    model = _model()
    ternarize(model)
    save_packed(model, tmp_path / "m.safetensors")
    wrong = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_packed(wrong, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="no ternary layers"):
        save_packed(_model(), tmp_path / "plain.safetensors")


def test_vmamba_linear2d_is_ternarized_and_round_trips(tmp_path):
    from fovea.nn.layers import Linear2d
    from fovea.nn.ternary import BitLinear2d

    torch.manual_seed(5)
    model = nn.Sequential(Linear2d(6, 12), nn.GELU(), Linear2d(12, 4))
    report = ternarize(model)
    assert report.converted == ["0", "2"] and isinstance(model[0], BitLinear2d)
    x = torch.randn(2, 6, 5, 3)
    # per pixel, a Linear2d equals BitLinear on the channel vector
    ref = BitLinear.from_linear(model[0])(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(model[0](x), ref, rtol=1e-5, atol=1e-6)
    expected = model(x).detach()
    save_packed(model, tmp_path / "v.safetensors")
    fresh = load_packed(nn.Sequential(Linear2d(6, 12), nn.GELU(), Linear2d(12, 4)), tmp_path / "v.safetensors")
    torch.testing.assert_close(fresh(x), expected, rtol=1e-4, atol=1e-5)
