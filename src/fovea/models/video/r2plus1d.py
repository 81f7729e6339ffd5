"""R(2+1)D (Tran et al., CVPR 2018): every t x d x d convolution factored into a 1 x d x d spatial
convolution to M channels, BN, ReLU, then a t x 1 x 1 temporal one, with M chosen so the pair has
the parameters of the full 3D kernel: M = floor(3 d^2 N_in N_out / (d^2 N_in + 3 N_out)) (t = 3
fixed, as MMAction2's Conv2plus1d; its 1x1x1 shortcut convs are factored the same way).

`r2plus1d_r34`: MMAction2's R34 config (conv1 3x7x7, temporal strides (1,2,2,2), no pool2,
BN eps 1e-3): 63.76 M parameters with 400 classes, 40.56 GMACs at 8x224^2.
"""

from __future__ import annotations

from torch import nn

from fovea.models.video._registry import register_video_model
from fovea.models.video.resnet3d import Recognizer3d, ResNet3d, TemporalPadConv3d, conv3d


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class Conv2plus1d(nn.Module):
    """(2+1)D factorisation of a kernel (t, d, d): (B, N_in, T, H, W) -> (B, N_out, T', H', W')."""

    def __init__(self, in_ch: int, out_ch: int, kernel, stride=1, padding=0, *, bn_eps: float = 1e-3):
        super().__init__()
        k, s, p = _triple(kernel), _triple(stride), _triple(padding)
        mid = int(3 * in_ch * out_ch * k[1] * k[2] / (in_ch * k[1] * k[2] + 3 * out_ch))
        self.mid_channels = mid
        self.conv_s = TemporalPadConv3d(in_ch, mid, (1, k[1], k[2]), (1, s[1], s[2]), (0, p[1], p[2]), bias=False)
        self.bn_s = nn.BatchNorm3d(mid, eps=bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.conv_t = TemporalPadConv3d(mid, out_ch, (k[0], 1, 1), (s[0], 1, 1), (p[0], 0, 0), bias=False)

    def forward(self, x):
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


class Bottleneck2plus1d(nn.Module):
    """PySlowFast's R(2+1)D bottleneck (PyTorchVideo `r2plus1d_r50`): 1x1x1 -> [3x1x1 (temporal
    stride), BN, ReLU, 1x3x3 (spatial stride)] at the inner width (not parameter-matched) -> 1x1x1 (x4)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 downsample: nn.Module | None = None, inflate: bool = True, conv=None, non_local=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv_t = TemporalPadConv3d(planes, planes, (3, 1, 1), (temporal_stride, 1, 1), (1, 0, 0), bias=False)
        self.bn_t = nn.BatchNorm3d(planes)
        self.conv_s = TemporalPadConv3d(planes, planes, (1, 3, 3), (1, spatial_stride, spatial_stride), (0, 1, 1),
                                        bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv_s(self.relu(self.bn_t(self.conv_t(out))))))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


@register_video_model
def r2plus1d_r50(*, num_classes: int = 400, dropout: float = 0.5, features_only: bool = False) -> Recognizer3d:
    """R(2+1)D-R50 16x4 as PySlowFast / PyTorchVideo `r2plus1d_r50` build it (stem 1x7x7 without pool,
    spatial strides (2,2,2,2), temporal (1,1,2,2)): 28.11 M params, 57.53 GMACs at 16x224^2."""
    backbone = ResNet3d(50, conv1_kernel=(1, 7, 7), conv1_stride_t=1, with_pool2=False, stem_pool=False,
                        spatial_strides=(2, 2, 2, 2), temporal_strides=(1, 1, 2, 2), inflate=(1, 1, 1, 1),
                        block=Bottleneck2plus1d, conv=conv3d)
    return Recognizer3d(backbone, num_classes, dropout, features_only)


def _set_bn_eps(model: nn.Module, eps: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = eps


@register_video_model
def r2plus1d_r34(*, num_classes: int = 400, dropout: float = 0.5, features_only: bool = False) -> Recognizer3d:
    """R(2+1)D-R34, MMAction2 `r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb` (SyncBN -> BatchNorm3d)."""
    backbone = ResNet3d(34, conv1_kernel=(3, 7, 7), conv1_stride_t=1, pool1_stride_t=1, with_pool2=False,
                        spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 2, 2, 2), inflate=(1, 1, 1, 1),
                        conv=Conv2plus1d)
    _set_bn_eps(backbone, 1e-3)
    return Recognizer3d(backbone, num_classes, dropout, features_only)
