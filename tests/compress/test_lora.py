"""LoRA against hand-written formulas and peft's LoRA, merge/unmerge, adapter files, fovea backbones."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from fovea.compress import lora
from fovea.errors import CheckpointError
from fovea.models.sparx import SPARX_CONFIGS
from fovea.models.vmamba import VMAMBA_CONFIGS
from fovea.nn.lora import LoRAConv2d, LoRALinear


def _randomise_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora.lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)


def test_linear_formula():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 4), rank=2, alpha=3.0)
    _randomise_b(nn.Sequential(layer))
    x = torch.randn(5, 6)
    w, b, a, bb = layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B
    expected = x @ w.T + b + (x @ a.T @ bb.T) * (3.0 / 2)
    torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)


def test_conv_delta_by_loops():
    torch.manual_seed(1)
    layer = LoRAConv2d(nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1), rank=2, alpha=4.0)
    _randomise_b(nn.Sequential(layer))
    delta = torch.zeros_like(layer.base.weight)
    for o in range(5):
        for r in range(2):
            delta[o] += layer.lora_B[o, r, 0, 0] * layer.lora_A[r] * 2.0
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.base.weight + delta, layer.base.bias, stride=2, padding=1),
                               rtol=1e-5, atol=1e-5)


def test_same_output_as_peft():
    peft = pytest.importorskip("peft")
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    ref = peft.get_peft_model(
        nn.Sequential(*[m for m in _copy(net)]),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "3"], lora_dropout=0.0, init_lora_weights=False))
    ours = _copy(net)
    lora.add_lora(ours, rank=4, alpha=8)
    with torch.no_grad():  # same adapter weights in both (peft's own random init, init_lora_weights=False)
        for name in ("0", "3"):
            peft_layer = ref.base_model.model.get_submodule(name)
            ours[int(name)].lora_A.copy_(peft_layer.lora_A["default"].weight.reshape(ours[int(name)].lora_A.shape))
            ours[int(name)].lora_B.copy_(peft_layer.lora_B["default"].weight.reshape(ours[int(name)].lora_B.shape))
    x = torch.randn(3, 3, 4, 4)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def _copy(net):
    clone = type(net)(*[type(m)(**_args(m)) if not isinstance(m, (nn.ReLU, nn.Flatten)) else m for m in net])
    clone.load_state_dict(net.state_dict())
    return clone


def _args(m):
    if isinstance(m, nn.Linear):
        return dict(in_features=m.in_features, out_features=m.out_features)
    return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size, padding=m.padding)


BACKBONES = {
    "vit": lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3),
    "lite0": lambda: timm.create_model("efficientnet_lite0", num_classes=3),
    "vmamba": lambda: timm.create_model("vmamba_tiny_s1l8", num_classes=3, cfg=dataclasses.replace(
        VMAMBA_CONFIGS["vmamba_tiny_s1l8"], depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))),
    "sparx": lambda: timm.create_model("sparx_mamba_t", num_classes=3, cfg=dataclasses.replace(
        SPARX_CONFIGS["sparx_mamba_t"], depths=(1, 2, 3, 2), dims=(8, 16, 20, 28), drop_path_rate=0.0)),
}


@pytest.mark.parametrize("family", list(BACKBONES))
def test_backbones_merge_unmerge_and_adapter_file(family, tmp_path):
    torch.manual_seed(3)
    model = BACKBONES[family]().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    report = lora.add_lora(model, rank=2, train_also=("head*", "classifier*"))
    assert report.wrapped and report.trainable_params < report.total_params
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or n.startswith(("head", "classifier")) for n in trainable)
    with torch.no_grad():
        assert torch.equal(model(x), before)  # B = 0: a fresh adapter changes nothing
        _randomise_b(model)
        adapted = model(x)
        assert not torch.allclose(adapted, before)
        lora.merge_lora(model)
        torch.testing.assert_close(model(x), adapted, rtol=1e-4, atol=1e-5)
        lora.unmerge_lora(model)
        for name, m in lora.lora_modules(model).items():
            assert torch.equal(m.base.weight, weights[name + ".weight"]), name  # bit for bit
    size = lora.save_lora(model, tmp_path / "a.safetensors")
    assert size < sum(v.numel() * 4 for v in weights.values())
    fresh = BACKBONES[family]().eval()
    fresh.load_state_dict(weights)
    lora.add_lora(fresh, rank=2, train_also=("head*", "classifier*"))
    lora.load_lora(fresh, tmp_path / "a.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(x), adapted)
        lora.remove_lora(fresh, merge=True)
        assert not lora.lora_modules(fresh)
        torch.testing.assert_close(fresh(x), adapted, rtol=1e-4, atol=1e-5)


def test_skips_are_reported_and_errors_name_the_file(tmp_path):
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    report = lora.add_lora(net, rank=1)
    assert report.wrapped == ["1"] and report.skipped == [("0", "grouped conv (groups=4)")]
    with pytest.raises(CheckpointError, match="b.safetensors"):
        lora.load_lora(net, tmp_path / "b.safetensors")
    lora.save_lora(net, tmp_path / "r1.safetensors")
    other = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1))
    lora.add_lora(other, rank=2)
    with pytest.raises(CheckpointError, match="rank/alpha"):
        lora.load_lora(other, tmp_path / "r1.safetensors")
