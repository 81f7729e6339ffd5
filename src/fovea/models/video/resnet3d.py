"""The 3D ResNet that I3D, R(2+1)D and SlowFast share (MMAction2's `ResNet3d` layout, rewritten).

Module names mirror torchvision's 2D ResNet (`conv1`, `bn1`, `layer1.0.conv1`, `downsample.0`, ...)
so 2D ImageNet weights inflate onto it by name (`inflate_state_dict`). Input (B, C, T, H, W).
Blocks: `Bottleneck3d` (R50: an inflated block's first 1x1 becomes 3x1x1, "3x1x1" style) and
`BasicBlock3d` (R34: both 3x3 become 3x3x3, or (2+1)D pairs when `conv_factory` says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ConvFactory = Callable[..., nn.Module]
_NATIVE_CONV3D_MAX_SIZE = 20480     # torch runs 3D convs with B * C * T * H up to this outside oneDNN


class TemporalPadConv3d(nn.Conv3d):
    """Conv3d whose temporal padding may replicate the end frames instead of adding zeros.

    With `temporal_pad="replicate"` an inflated network maps a static clip exactly to the 2D
    network's per-frame output (the I3D "boring video" fixed point); "zeros" is MMAction2's choice.
    """

    def __init__(self, *args, temporal_pad: str = "zeros", **kwargs):
        super().__init__(*args, **kwargs)
        self.temporal_pad = temporal_pad
        self._pad_t = self.padding[0]
        if temporal_pad == "replicate" and self._pad_t:
            self.padding = (0,) + tuple(self.padding[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal_pad == "replicate" and self._pad_t:
            pad = self._pad_t
            x = torch.cat([x[:, :, :1].expand(-1, -1, pad, -1, -1), x,
                           x[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)
        if self._temporal_only:
            return self._temporal_as_2d(x)
        if self._frame_wise(x):
            return self._frames_as_2d(x)
        return super().forward(x)

    @property
    def _temporal_only(self) -> bool:
        """A kt x 1 x 1 kernel (kt > 1) without spatial stride, padding, dilation or groups."""
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        return (k[0] > 1 and k[1:] == (1, 1) and s[1:] == (1, 1) and p[1:] == (0, 0) and d == (1, 1, 1)
                and self.groups == 1 and self.padding_mode == "zeros")

    def _temporal_as_2d(self, x: torch.Tensor) -> torch.Tensor:
        """The same convolution as a 2D (kt, 1) one over (B, C, T, H*W): on one CPU thread torch runs
        kt x 1 x 1 Conv3d through its slow im2col path, the 2D form through oneDNN (about 2x faster,
        measured by benchmarks/video.py). (B, C, T, H, W) -> (B, O, T', H, W)."""
        b, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(b, c, t, h * w), self.weight.squeeze(-1), self.bias, (self.stride[0], 1),
                     (self.padding[0], 0))
        return y.view(b, y.shape[1], y.shape[2], h, w)

    def _frame_wise(self, x: torch.Tensor) -> bool:
        """A 1 x kh x kw kernel (not 1 x 1) where torch would run its native Conv3d: for batch 1,
        groups 1 and a kernel side <= 3, torch picks oneDNN only when B * C * T * H > 20480
        (`ConvParams::use_mkldnn`), else an im2col loop up to 6x slower on the thin SlowFast fast
        pathway (measured: 8 ch, 32 x 56^2 frames 27.6 vs 4.6 ms as 2D); on oneDNN's side of that
        line the 3D and the 2D form cost the same, so those stay 3D. Export/compile keeps the Conv3d
        (no branch on a possibly dynamic batch size)."""
        k = self.kernel_size
        return (not torch.compiler.is_compiling() and k[0] == 1 and k[1:] != (1, 1) and self.padding[0] == 0 and self.padding_mode == "zeros"
                and self.groups == 1 and min(k[1:]) <= 3 and x.shape[0] == 1
                and x.shape[1] * x.shape[2] * x.shape[3] <= _NATIVE_CONV3D_MAX_SIZE)

    def _frames_as_2d(self, x: torch.Tensor) -> torch.Tensor:
        """The same convolution as a 2D one over the (B * T') frames (temporal stride = frame
        subsampling). (B, C, T, H, W) -> (B, O, T', H', W'), contiguous."""
        x = x[:, :, ::self.stride[0]]
        b, c, t, h, w = x.shape
        y = F.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w), self.weight.squeeze(2), self.bias, self.stride[1:],
                     self.padding[1:], self.dilation[1:], self.groups)
        return y.view(b, t, *y.shape[1:]).transpose(1, 2).contiguous()


def conv3d(in_ch: int, out_ch: int, kernel, stride=1, padding=0, *, temporal_pad: str = "zeros") -> nn.Module:
    """Plain bias-free Conv3d (the default `conv_factory`)."""
    return TemporalPadConv3d(in_ch, out_ch, kernel, stride, padding, bias=False, temporal_pad=temporal_pad)


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class Bottleneck3d(nn.Module):
    """1x1 (3x1x1 if inflated) -> 1x3x3 (temporal and spatial stride) -> 1x1 (x4), residual, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 downsample: nn.Module | None = None, inflate: bool = True, conv: ConvFactory = conv3d,
                 non_local: nn.Module | None = None):
        super().__init__()
        k1, p1 = ((3, 1, 1), (1, 0, 0)) if inflate else ((1, 1, 1), (0, 0, 0))
        self.conv1 = conv(inplanes, planes, k1, 1, p1)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv(planes, planes, (1, 3, 3), (temporal_stride, spatial_stride, spatial_stride), (0, 1, 1))
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv(planes, planes * 4, 1, 1, 0)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.downsample = downsample
        self.non_local = non_local

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        out = F.relu(out, inplace=True)
        return out if self.non_local is None else self.non_local(out)


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions (1x3x3 when not inflated), the first strided, residual, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 downsample: nn.Module | None = None, inflate: bool = True, conv: ConvFactory = conv3d,
                 non_local: nn.Module | None = None):
        super().__init__()
        k, p = ((3, 3, 3), (1, 1, 1)) if inflate else ((1, 3, 3), (0, 1, 1))
        self.conv1 = conv(inplanes, planes, k, (temporal_stride, spatial_stride, spatial_stride), p)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv(planes, planes, k, 1, p)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample
        self.non_local = non_local

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        out = F.relu(out, inplace=True)
        return out if self.non_local is None else self.non_local(out)


def make_res_layer(block: type[nn.Module], inplanes: int, planes: int, blocks: int, *, spatial_stride: int,
                   temporal_stride: int, inflate: Sequence[int] | int, conv: ConvFactory = conv3d,
                   non_local: Sequence[int] | int = 0, non_local_factory: Callable[[int], nn.Module] | None = None
                   ) -> nn.Sequential:
    """One ResNet stage; `inflate`/`non_local` are per-block flags (an int repeats for every block).

    `inplanes` may exceed the previous stage's width (SlowFast's lateral channels are added here)."""
    inflate = [inflate] * blocks if isinstance(inflate, int) else list(inflate)
    non_local = [non_local] * blocks if isinstance(non_local, int) else list(non_local)
    out_ch = planes * block.expansion
    downsample = None
    if spatial_stride != 1 or temporal_stride != 1 or inplanes != out_ch:
        downsample = nn.Sequential(conv(inplanes, out_ch, 1, (temporal_stride, spatial_stride, spatial_stride), 0),
                                   nn.BatchNorm3d(out_ch))
    layers = []
    for i in range(blocks):
        nl = non_local_factory(out_ch) if non_local[i] and non_local_factory is not None else None
        layers.append(block(inplanes if i == 0 else out_ch, planes, spatial_stride if i == 0 else 1,
                            temporal_stride if i == 0 else 1, downsample if i == 0 else None,
                            bool(inflate[i]), conv, nl))
    return nn.Sequential(*layers)


STAGE_BLOCKS = {18: (BasicBlock3d, (2, 2, 2, 2)), 34: (BasicBlock3d, (3, 4, 6, 3)),
                50: (Bottleneck3d, (3, 4, 6, 3)), 101: (Bottleneck3d, (3, 4, 23, 3))}


class ResNet3d(nn.Module):
    """3D ResNet backbone: stem conv (conv1_kernel, stride (conv1_stride_t, 2, 2)) -> 1x3x3 max-pool
    (stride (pool1_stride_t, 2, 2)) -> four stages (optional (2,1,1) max-pool after the first).

    forward (B, C, T, H, W) -> (B, 2048|512, T', H/32, W/32); `forward_stages` returns every stage.
    """

    def __init__(self, depth: int = 50, *, in_channels: int = 3, base_channels: int = 64,
                 conv1_kernel=(5, 7, 7), conv1_stride_t: int = 2, pool1_stride_t: int = 2, with_pool2: bool = True,
                 spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 1, 1, 1),
                 inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
                 non_local=((0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0, 0, 0), (0, 0, 0)),
                 non_local_factory: Callable[[int], nn.Module] | None = None,
                 conv: ConvFactory = conv3d, stem_conv: ConvFactory | None = None,
                 lateral_channels: Sequence[int] = (0, 0, 0, 0), block: type[nn.Module] | None = None,
                 stem_pool: bool = True):
        super().__init__()
        default_block, stage_blocks = STAGE_BLOCKS[depth]
        block = block or default_block
        k = _triple(conv1_kernel)
        self.conv1 = (stem_conv or conv)(in_channels, base_channels, k, (conv1_stride_t, 2, 2),
                                         tuple((x - 1) // 2 for x in k))
        self.bn1 = nn.BatchNorm3d(base_channels)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (pool1_stride_t, 2, 2), (0, 1, 1)) if stem_pool else nn.Identity()
        self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1)) if with_pool2 else None
        inplanes = base_channels
        self.stage_channels = []
        for i, n in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            layer = make_res_layer(block, inplanes + lateral_channels[i], planes, n, spatial_stride=spatial_strides[i],
                                   temporal_stride=temporal_strides[i], inflate=inflate[i], conv=conv,
                                   non_local=non_local[i], non_local_factory=non_local_factory)
            self.add_module(f"layer{i + 1}", layer)
            inplanes = planes * block.expansion
            self.stage_channels.append(inplanes)
        self.num_features = inplanes

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the four stages, each (B, C_i, T_i, H_i, W_i)."""
        x = self.stem(x)
        feats = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i == 0 and self.pool2 is not None:
                x = self.pool2(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]


class ClipHead(nn.Module):
    """MMAction2's I3DHead: global average over (T, H, W) -> dropout -> linear. (B, C, T, H, W) -> (B, K)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x.mean(dim=(2, 3, 4))))


class Recognizer3d(nn.Module):
    """Backbone + clip head; `features_only=True` returns the stage maps instead of logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5, features_only: bool = False):
        super().__init__()
        self.backbone = backbone
        self.features_only = features_only
        self.num_features = backbone.num_features
        self.head = None if features_only else ClipHead(backbone.num_features, num_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) clip -> last feature map."""
        return self.backbone(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.backbone.forward_stages(x)
        return self.forward_head(self.forward_features(x))


def inflate_state_dict(sd2d: dict[str, torch.Tensor], model3d: nn.Module, prefix: str = "",
                       skip: Sequence[str] = ("fc.",)) -> dict[str, torch.Tensor]:
    """I3D inflation: every 2D conv kernel (O, I, kh, kw) is repeated over the 3D kernel's time
    extent kt and divided by kt; BatchNorm and other same-shape tensors are copied.

    Returns a state dict for `model3d` (keys = `prefix` + 2D key); raises KeyError/ValueError naming
    the first key that does not fit. Keys starting with any of `skip` are left out (the 2D classifier).
    """
    target = model3d.state_dict()
    out = {}
    for key, w in sd2d.items():
        if any(key.startswith(s) for s in skip) or key.endswith("num_batches_tracked"):
            continue
        k3 = prefix + key
        if k3 not in target:
            raise KeyError(f"2D key {key!r} has no 3D counterpart {k3!r}")
        t = target[k3]
        if w.ndim == 4 and t.ndim == 5:
            kt = t.shape[2]
            w = w.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
        if tuple(w.shape) != tuple(t.shape):
            raise ValueError(f"2D tensor {key} {tuple(w.shape)} does not inflate onto {k3} {tuple(t.shape)}")
        out[k3] = w
    return out
