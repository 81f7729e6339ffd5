"""timm integration: registration on import, features_only stages, forward_head, reset_classifier."""

import pytest
import timm
import torch

import fovea.models  # noqa: F401
from fovea.models.sparx_swin import SparXSwinConfig
from tiny_configs import TINY_SPARX, TINY_VMAMBA, TINY_VMAMBA_V0

NAMES = [
    "vmamba_tiny_s1l8", "vmamba_tiny_s2l5", "vmamba_small_s2l15", "vmamba_base_s2l15", "vmamba_small_s1l20",
    "vmamba_base_s1l20", "vmamba_tiny_v0", "vmamba_small_v0", "vmamba_base_v0",
    "sparx_mamba_t", "sparx_mamba_s", "sparx_mamba_b", "sparx_swin_t",
]


def test_all_names_registered():
    assert set(NAMES) <= set(timm.list_models())


@pytest.mark.parametrize(
    "name,cfg,size",
    [("vmamba_tiny_s1l8", TINY_VMAMBA, 224), ("vmamba_tiny_s1l8", TINY_VMAMBA, 256), ("sparx_mamba_t", TINY_SPARX, 224),
     ("sparx_mamba_t", TINY_SPARX, 256), ("vmamba_tiny_v0", TINY_VMAMBA_V0, 128)],
)
def test_features_only_shapes(name, cfg, size):
    model = timm.create_model(name, features_only=True, pretrained=False, cfg=cfg).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, size // r, size // r) for c, r in zip(cfg.dims, (4, 8, 16, 32))
    ]


def test_full_size_features_only_builds():
    with torch.device("meta"):  # structure only: no memory, no init cost
        model = timm.create_model("sparx_mamba_t", features_only=True, pretrained=False)
    assert model.feature_info.channels() == [96, 192, 320, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert not any("classifier.3" in k for k in model.state_dict())  # head pruned


def test_create_backbone_random_features_only():
    from fovea import weights

    with torch.device("meta"):
        model = weights.create_backbone("sparx_mamba_t", weights="random", features_only=True)
    assert model.feature_info.channels() == [96, 192, 320, 512]


TINY_SWIN = SparXSwinConfig(depths=(1, 1, 2, 2), dims=(12, 24, 48, 96), heads=(1, 2, 4, 8), img_size=64)


@pytest.mark.parametrize(
    "name,cfg", [("vmamba_tiny_s1l8", TINY_VMAMBA), ("sparx_mamba_t", TINY_SPARX), ("sparx_swin_t", TINY_SWIN)]
)
def test_head_api(name, cfg):
    model = timm.create_model(name, pretrained=False, cfg=cfg, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 96)  # any size divisible by 32
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, cfg.dims[-1], 2, 3)
        logits = model.forward_head(feats)
        assert logits.shape == (2, 7)
        torch.testing.assert_close(model(x), logits)
        assert model.forward_head(feats, pre_logits=True).shape == (2, cfg.dims[-1])
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, cfg.dims[-1])


def test_sparx_swin_tiny_features():
    model = timm.create_model("sparx_swin_t", features_only=True, cfg=TINY_SWIN).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 12, 16, 24), (1, 24, 8, 12), (1, 48, 4, 6), (1, 96, 2, 3)]
    assert [len(s.ganglion) for s in model.model.layers] == [0, 0, 1, 2]


@pytest.mark.parametrize("name,cfg", [("vmamba_tiny_v0", TINY_VMAMBA_V0), ("sparx_mamba_t", TINY_SPARX), ("sparx_swin_t", TINY_SWIN)])
def test_features_only_prunes_unused_stages(name, cfg):
    """out_indices (0, 1): later stages and the head are dropped; features equal the full model's."""
    torch.manual_seed(0)
    full = timm.create_model(name, cfg=cfg, num_classes=3).eval()
    feats_model = timm.create_model(name, features_only=True, out_indices=(0, 1), cfg=cfg).eval()
    inner = feats_model.model
    inner.load_state_dict({k: v for k, v in full.state_dict().items() if k in inner.state_dict()})
    assert len(inner.layers) == 2 and not any("classifier" in k for k in inner.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=(0, 1), intermediates_only=True)
        got = feats_model(x)
    assert [tuple(f.shape) for f in got] == [(1, cfg.dims[0], 16, 16), (1, cfg.dims[1], 8, 8)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
