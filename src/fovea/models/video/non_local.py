"""Non-local blocks (Wang et al., CVPR 2018) and the I3D-R50 / TSM-R50 recognizers that carry them.

`NonLocal3d` on (B, C, T, H, W): theta/phi/g 1x1x1 projections to C/2, pairwise relation
(embedded Gaussian = softmax(theta^T phi), dot product = theta^T phi / N, Gaussian = softmax(x^T x)),
y = relation @ g, output x + BN(W_z y) with the BN weight zero-initialised (identity at start).
`sub_sample` max-pools phi and g by (1, 2, 2). MMAction2's placements: I3D-NL
((0,0,0),(0,1,0,1),(0,1,0,1,0,1),(0,0,0)) = 35.40 M params, 44.34 GMACs at 32x224^2 (dot product);
TSM-NL ((0,0,0),(1,0,1,0),(1,0,1,0,1,0),(0,0,0)) = 31.68 M, 61.10 GMACs at 8x224^2.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import ConfigError
from fovea.models.video._registry import register_video_model

MODES = ("embedded_gaussian", "dot_product", "gaussian")


class NonLocal3d(nn.Module):
    """Non-local block; input and output (B, C, T, H, W)."""

    def __init__(self, in_channels: int, mode: str = "embedded_gaussian", reduction: int = 2,
                 sub_sample: bool = True, use_scale: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"NonLocal3d mode={mode!r}; use one of {MODES}")
        self.mode, self.use_scale = mode, use_scale
        self.inter = inter = max(in_channels // reduction, 1)
        self.g = nn.Conv3d(in_channels, inter, 1)
        if mode != "gaussian":
            self.theta = nn.Conv3d(in_channels, inter, 1)
            self.phi = nn.Conv3d(in_channels, inter, 1)
        self.pool = nn.MaxPool3d((1, 2, 2)) if sub_sample else nn.Identity()
        self.conv_out = nn.Conv3d(inter, in_channels, 1, bias=False)
        self.bn = nn.BatchNorm3d(in_channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        g = self.pool(self.g(x)).flatten(2).transpose(1, 2)                  # (B, N', C/2)
        if self.mode == "gaussian":
            q = x.flatten(2).transpose(1, 2)                                  # (B, N, C)
            k = self.pool(x).flatten(2).transpose(1, 2)
        else:
            q = self.theta(x).flatten(2).transpose(1, 2)                      # (B, N, C/2)
            k = self.pool(self.phi(x)).flatten(2).transpose(1, 2)            # (B, N', C/2)
        if self.mode == "dot_product":
            y = (q @ k.transpose(1, 2)) / k.shape[1] @ g
        else:
            scale = q.shape[-1] ** -0.5 if self.use_scale else 1.0
            y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), g.unsqueeze(1), scale=scale)[:, 0]
        y = y.transpose(1, 2).reshape(b, self.inter, t, h, w)
        return x + self.bn(self.conv_out(y))


class NonLocal2dOverTime(nn.Module):
    """A 2D block followed by a Non-local block over its clip: (B*T, C, H, W) in and out (TSM-NL)."""

    def __init__(self, block: nn.Module, channels: int, num_segments: int, mode: str):
        super().__init__()
        self.block = block
        self.num_segments = num_segments
        self.non_local = NonLocal3d(channels, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        bt, c, h, w = x.shape
        t = self.num_segments
        y = self.non_local(x.view(bt // t, t, c, h, w).transpose(1, 2))
        return y.transpose(1, 2).reshape(bt, c, h, w)


I3D_NL_PLACEMENT = ((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0))
TSM_NL_PLACEMENT = ((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0))


@register_video_model
def i3d_r50_nl(*, num_classes: int = 400, mode: str = "dot_product", **kwargs) -> nn.Module:
    """I3D-R50 + 5 Non-local blocks in res3/res4 (MMAction2 `i3d_..._r50-nl-<mode>_...`)."""
    from fovea.models.video.i3d import build_i3d_r50

    return build_i3d_r50(num_classes, non_local=I3D_NL_PLACEMENT,
                         non_local_factory=functools.partial(NonLocal3d, mode=mode), **kwargs)


@register_video_model
def tsm_r50_nl(*, num_classes: int = 400, num_segments: int = 8, mode: str = "embedded_gaussian",
               **kwargs) -> nn.Module:
    """TSM-R50 with Non-local blocks wrapped around res3/res4 blocks (MMAction2 `tsm_..._r50-nl-...`)."""
    from fovea.models.video.tsm import build_tsm_resnet50

    model = build_tsm_resnet50(num_classes, num_segments=num_segments, **kwargs)
    net = model.backbone
    for layer_name, flags in zip(("layer1", "layer2", "layer3", "layer4"), TSM_NL_PLACEMENT):
        layer = getattr(net, layer_name)
        for i, flag in enumerate(flags):
            if flag:
                ch = layer[i].conv3.out_channels
                layer[i] = NonLocal2dOverTime(layer[i], ch, num_segments, mode)
    return model
