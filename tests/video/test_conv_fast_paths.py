"""The video models' faster convolution paths against plain torch Conv3d on the same weights:
1 x k x k kernels run as 2D convolutions over the frames (where torch would take its slow native
Conv3d path), and whole SlowFast / I3D / R(2+1)D networks against copies whose every
TemporalPadConv3d is replaced by an `nn.Conv3d` (the independent reference)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fovea.models.video as V
from fovea.models.video.resnet3d import TemporalPadConv3d


@pytest.mark.parametrize("cin,cout,t,hw,stride,pad,dil", [(8, 8, 6, 9, (1, 1, 1), (0, 1, 1), 1),
                                                         (8, 16, 6, 9, (1, 2, 2), (0, 1, 1), 1),
                                                         (4, 6, 7, 11, (2, 2, 1), (0, 2, 1), 1),
                                                         (5, 3, 4, 12, (1, 1, 1), (0, 2, 2), 2),
                                                         (3, 8, 5, 10, (1, 2, 2), (0, 0, 0), 1)])
def test_frame_wise_2d_path_equals_conv3d(cin, cout, t, hw, stride, pad, dil):
    """Values and weight/input gradients equal F.conv3d's; temporal stride subsamples frames."""
    torch.manual_seed(0)
    k = (1, 3, 3) if dil == 1 else (1, 3, 2)
    conv = TemporalPadConv3d(cin, cout, k, stride, pad, dilation=(1, dil, dil), bias=True)
    x = torch.randn(1, cin, t, hw, hw + 1, requires_grad=True)
    assert conv._frame_wise(x) and not conv._temporal_only
    ref = F.conv3d(x, conv.weight, conv.bias, stride, pad, (1, dil, dil))
    got = conv(x)
    assert got.shape == ref.shape and got.is_contiguous()
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), (conv.weight, x))
    g_got = torch.autograd.grad(got.square().sum(), (conv.weight, x))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_frame_wise_path_only_where_torch_would_not_use_onednn():
    conv = TemporalPadConv3d(8, 8, (1, 3, 3), 1, (0, 1, 1))
    assert conv._frame_wise(torch.empty(1, 8, 32, 56, 56))            # 8 * 32 * 56 = 14336 <= 20480
    assert not conv._frame_wise(torch.empty(1, 64, 8, 56, 56))         # 28672: torch's oneDNN path already
    assert not conv._frame_wise(torch.empty(2, 8, 32, 56, 56))         # batch > 1: oneDNN already
    assert not TemporalPadConv3d(8, 8, (1, 7, 7), 1, (0, 3, 3))._frame_wise(torch.empty(1, 8, 4, 8, 8))
    assert not TemporalPadConv3d(8, 8, (1, 1, 1))._frame_wise(torch.empty(1, 8, 4, 8, 8))
    assert not TemporalPadConv3d(8, 8, (3, 3, 3), padding=1)._frame_wise(torch.empty(1, 8, 4, 8, 8))
    assert not TemporalPadConv3d(8, 8, (1, 3, 3), groups=8)._frame_wise(torch.empty(1, 8, 4, 8, 8))


def _with_plain_conv3d(model: nn.Module) -> nn.Module:
    """A copy whose TemporalPadConv3d layers (zero temporal padding) are plain nn.Conv3d."""
    ref = copy.deepcopy(model)
    for parent in list(ref.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, TemporalPadConv3d):
                assert m.temporal_pad == "zeros"
                plain = nn.Conv3d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                                  m.groups, m.bias is not None)
                plain.load_state_dict(m.state_dict())
                setattr(parent, name, plain)
    assert not any(isinstance(m, TemporalPadConv3d) for m in ref.modules())
    return ref


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@torch.no_grad()
@pytest.mark.parametrize("name,frames,size", [("slowfast_r50_8x8", 16, 64), ("slowfast_r50", 16, 64),
                                              ("i3d_r50_8x8", 8, 64), ("r2plus1d_r50", 8, 64)])
def test_video_networks_equal_their_plain_conv3d_copies(name, frames, size):
    torch.manual_seed(0)
    model = V.create_model(name, num_classes=7).eval()
    _randomize_bn(model)
    n_frame_wise = []
    hook = lambda m, args: n_frame_wise.append(m._frame_wise(args[0]))   # noqa: E731
    for m in model.modules():
        if isinstance(m, TemporalPadConv3d):
            m.register_forward_pre_hook(hook)
    clip = torch.randn(1, 3, frames, size, size)
    got = model(clip)
    assert sum(n_frame_wise) > 0                 # the 2D frame path ran inside the network
    torch.testing.assert_close(got, _with_plain_conv3d(model)(clip), atol=1e-4, rtol=1e-4)
