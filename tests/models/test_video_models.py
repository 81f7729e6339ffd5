"""Behaviour of the video models on tiny real inputs, each against an independent reference:
I3D inflation's static-clip fixed point (the 2D network's output), TSM's shift vs a per-element
loop, online TSM vs the offline clip, TSN consensus vs per-frame scores, Non-local vs its formula,
TimeSformer's frame-permutation symmetry, R(2+1)D's parameter matching vs the full 3D kernel."""

from __future__ import annotations

import pytest
import torch
import torchvision

import fovea.models.video as V
from fovea.models.video.i3d import inflate_resnet50
from fovea.models.video.non_local import NonLocal3d
from fovea.models.video.r2plus1d import Conv2plus1d
from fovea.models.video.timesformer import TimeSformer
from fovea.models.video.tsm import OnlineTSM, temporal_shift


def _randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@torch.no_grad()
def test_i3d_r50_inflated_from_2d_maps_a_static_clip_to_the_2d_output():
    torch.manual_seed(0)
    net2d = torchvision.models.resnet50(weights=None, num_classes=5).eval()
    _randomize_bn(net2d)
    i3d = inflate_resnet50(V.create_model("i3d_r50", num_classes=5, temporal_pad="replicate"),
                           net2d.state_dict(), with_fc=True).eval()
    img = torch.randn(1, 3, 64, 64)
    clip = img.unsqueeze(2).expand(-1, -1, 8, -1, -1)
    torch.testing.assert_close(i3d(clip), net2d(img), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_i3d_lite0_from_offline_imagenet_weights_maps_a_static_clip_to_the_2d_output():
    from fovea.weights import create_backbone

    net2d = create_backbone("efficientnet_lite0").eval()
    i3d = V.create_model("i3d_lite0", temporal_pad="replicate").eval()
    img = torch.randn(1, 3, 64, 64)
    out3d = i3d(img.unsqueeze(2).expand(-1, -1, 4, -1, -1))
    torch.testing.assert_close(out3d, net2d(img), atol=1e-4, rtol=1e-4)
    assert out3d.argmax() == net2d(img).argmax()


@pytest.mark.parametrize("mode", ["bidirectional", "causal"])
def test_temporal_shift_matches_a_per_element_loop(mode):
    b, t, c = 2, 4, 16
    x = torch.randn(b * t, c, 3, 3)
    out = temporal_shift(x, t, 8, mode).view(b, t, c, 3, 3)
    xv = x.view(b, t, c, 3, 3)
    fold = c // 8
    for bi in range(b):
        for ti in range(t):
            for ci in range(c):
                if mode == "bidirectional" and ci < fold:
                    src = ti + 1
                elif mode == "bidirectional" and ci < 2 * fold:
                    src = ti - 1
                elif mode == "causal" and ci < fold:
                    src = ti - 1
                else:
                    src = ti
                want = xv[bi, src, ci] if 0 <= src < t else torch.zeros(3, 3)
                assert torch.equal(out[bi, ti, ci], want)


@torch.no_grad()
def test_online_tsm_per_frame_features_equal_the_offline_causal_clip():
    tsm = V.create_model("tsm_lite0", num_classes=3, weights="random", num_segments=5).eval()
    clip = torch.randn(1, 3, 5, 64, 64)
    offline = tsm.forward_frames(clip)[0]                        # (T, F)
    online = OnlineTSM(tsm)
    for k in range(5):
        torch.testing.assert_close(online.step(clip[:, :, k])[0], offline[k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(online.logits(5), tsm(clip), atol=1e-4, rtol=1e-4)
    with pytest.raises(Exception, match="causal"):
        OnlineTSM(V.create_model("tsm_lite0", weights="random", shift_mode="bidirectional"))


@torch.no_grad()
@pytest.mark.parametrize("name", ["tsm_lite0", "tsm_r50"])
def test_online_tsm_with_folded_bn_and_channels_last_equals_the_offline_clip(name):
    """BatchNorm with random statistics folded into the convs, channels-last memory: the streamed
    features still equal the unfolded offline causal model's, and the given model is unchanged."""
    from torch import nn

    from fovea.models.video.tsm import fold_batchnorm

    torch.manual_seed(0)
    kw = {"weights": "random"} if name == "tsm_lite0" else {}
    tsm = V.create_model(name, num_classes=3, num_segments=4, shift_mode="causal", **kw).eval()
    for m in tsm.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
    clip = torch.randn(1, 3, 4, 32, 48)
    offline = tsm.forward_frames(clip)[0]
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in tsm.modules())
    online = OnlineTSM(tsm, fold_bn=True, channels_last=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in online.tsm.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in tsm.modules()) == n_bn
    for k in range(4):
        torch.testing.assert_close(online.step(clip[:, :, k])[0], offline[k], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(online.logits(4), tsm(clip), atol=2e-4, rtol=1e-4)
    assert fold_batchnorm(nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.BatchNorm2d(2))) == 0   # not adjacent


@torch.no_grad()
def test_tsn_clip_score_is_the_mean_of_per_frame_scores():
    tsn = V.create_model("tsn_r50", num_classes=4).eval()
    clip = torch.randn(1, 3, 3, 32, 32)
    per_frame = [tsn.fc(tsn.backbone(clip[:, :, k]).mean(dim=(2, 3))) for k in range(3)]
    torch.testing.assert_close(tsn(clip), torch.stack(per_frame).mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["dot_product", "embedded_gaussian", "gaussian"])
@torch.no_grad()
def test_non_local_matches_its_formula(mode):
    torch.manual_seed(0)
    nl = NonLocal3d(8, mode=mode, sub_sample=False).eval()
    x = torch.randn(1, 8, 2, 3, 3)
    assert torch.equal(nl(x), x)                       # zero-initialised BN: identity at start
    torch.nn.init.ones_(nl.bn.weight)
    xs = x.flatten(2)[0].T                                           # (N, C)
    g = nl.g.weight.view(4, 8)
    gx = xs @ g.T + nl.g.bias
    if mode == "gaussian":
        rel = torch.softmax(xs @ xs.T, dim=1)
    else:
        th = xs @ nl.theta.weight.view(4, 8).T + nl.theta.bias
        ph = xs @ nl.phi.weight.view(4, 8).T + nl.phi.bias
        rel = th @ ph.T
        rel = rel / rel.shape[1] if mode == "dot_product" else torch.softmax(rel, dim=1)
    y = (rel @ gx).T.reshape(1, 4, 2, 3, 3)
    torch.testing.assert_close(nl(x), x + nl.bn(nl.conv_out(y)), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_timesformer_cls_output_is_invariant_to_frame_order_without_time_embedding():
    torch.manual_seed(0)
    m = TimeSformer(5, num_frames=4, img_size=32, patch_size=8, dim=32, depth=2, heads=2).eval()
    for blk in m.blocks:                              # make temporal attention matter
        torch.nn.init.normal_(blk.temporal_fc.weight, std=0.2)
    m.time_embed.zero_()
    clip = torch.randn(1, 3, 4, 32, 32)
    perm = clip[:, :, [2, 0, 3, 1]]
    torch.testing.assert_close(m(clip), m(perm), atol=1e-5, rtol=1e-4)
    m.time_embed.normal_()
    assert not torch.allclose(m(clip), m(perm), atol=1e-3)


def test_conv2plus1d_matches_the_full_3d_kernel_parameters():
    for n_in, n_out in [(64, 64), (64, 128), (256, 512), (3, 64)]:
        conv = Conv2plus1d(n_in, n_out, 3)
        full = 27 * n_in * n_out
        pair = conv.conv_s.weight.numel() + conv.conv_t.weight.numel()
        assert abs(pair - full) <= 9 * n_in + 3 * n_out      # M is floored: off by < one mid channel


@pytest.mark.slow
@pytest.mark.parametrize("name,frames,size", [("c3d", 16, 112), ("i3d_r50", 8, 32), ("r2plus1d_r34", 8, 32),
                                              ("slowfast_r50", 16, 32), ("tsm_r50", 2, 32)])
@torch.no_grad()
def test_tiny_forward_and_features_only(name, frames, size):
    model = V.create_model(name, num_classes=3).eval()
    clip = torch.randn(1, 3, frames, size, size)
    out = model(clip)
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    feats = V.create_model(name, features_only=True).eval()(clip)
    assert isinstance(feats, (list, tuple, torch.Tensor))


@pytest.mark.parametrize("kt,stride_t,pad_t,mode", [(3, 1, 1, "zeros"), (7, 4, 3, "zeros"), (3, 2, 1, "replicate"),
                                                    (5, 1, 2, "zeros")])
def test_temporal_kernel_as_2d_equals_conv3d(kt, stride_t, pad_t, mode):
    """kt x 1 x 1 convolutions run as 2D (kt, 1) ones: same output as torch's conv3d on the same
    weights (with replicate padding: conv3d on the explicitly edge-padded clip)."""
    import torch.nn.functional as F

    from fovea.models.video.resnet3d import TemporalPadConv3d

    torch.manual_seed(0)
    conv = TemporalPadConv3d(6, 5, (kt, 1, 1), (stride_t, 1, 1), (pad_t, 0, 0), bias=True, temporal_pad=mode)
    x = torch.randn(2, 6, 9, 4, 5, requires_grad=True)
    assert conv._temporal_only
    if mode == "zeros":
        ref = F.conv3d(x, conv.weight, conv.bias, (stride_t, 1, 1), (pad_t, 0, 0))
    else:
        xp = torch.cat([x[:, :, :1]] * pad_t + [x] + [x[:, :, -1:]] * pad_t, dim=2)
        ref = F.conv3d(xp, conv.weight, conv.bias, (stride_t, 1, 1))
    got = conv(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), conv.weight)[0]
    g_got = torch.autograd.grad(got.square().sum(), conv.weight)[0]
    torch.testing.assert_close(g_got, g_ref, atol=1e-4, rtol=1e-4)
    assert not TemporalPadConv3d(6, 5, (3, 3, 3), 1, 1)._temporal_only      # spatial kernels keep conv3d
    assert not TemporalPadConv3d(6, 5, (3, 1, 1), (1, 2, 2), (1, 0, 0))._temporal_only   # spatial stride
