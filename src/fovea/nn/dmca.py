"""DMCA: SparX's Dynamic Multi-layer Channel Aggregator (Lou et al., AAAI 2025).

A ganglion layer aggregates the outputs of earlier layers (concatenated on channels) with a
channel-wise cross-attention whose query is the current layer: heads of C/4 channels attend
channel-to-channel over spatially reduced maps (reduction `sr_ratio`). The current features, the
attention output and the values are channel-shuffled and fused by a depthwise 3x3 + grouped 1x1
into `out_chs` channels. Submodule names (`d_norm`, `d_proj`, `q`, `k`, `v`, `in_proj`) equal the
official SparX keys so the same weights load into fovea's SparX-Mamba.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from timm.layers import GroupNorm1

__all__ = ["DMCA", "build_dmca", "dmca_forward"]


def _spatial_reduction(dim: int, sr_ratio: int) -> nn.Module:
    if sr_ratio <= 1:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(dim, dim, sr_ratio + 1, stride=sr_ratio, padding=(sr_ratio + 1) // 2, groups=dim, bias=False),
        nn.BatchNorm2d(dim),
        nn.GELU(),
    )


def build_dmca(module: nn.Module, dim: int, in_chs: int, out_chs: int, sr_ratio: int, heads: int = 4) -> None:
    """Attach the DMCA submodules to `module` (dim = current width, in_chs = aggregated width)."""
    module.dmca_heads = heads
    module.d_norm = GroupNorm1(in_chs)
    module.d_proj = nn.Sequential(
        nn.Conv2d(in_chs, in_chs, 3, padding=1, groups=in_chs, bias=False),
        nn.BatchNorm2d(in_chs),
        nn.GELU(),
        nn.Conv2d(in_chs, 2 * dim, 1),
        nn.GELU(),
    )
    module.q = nn.Sequential(_spatial_reduction(dim, sr_ratio), nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
    module.k = nn.Sequential(_spatial_reduction(dim, sr_ratio), nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
    module.v = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
    fused = out_chs // 3 * 3
    module.in_proj = nn.Sequential(
        nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim),
        nn.GELU(),
        nn.Conv2d(3 * dim, fused, 1, groups=3),
    )
    module.channel_padding = out_chs - fused


def dmca_forward(module: nn.Module, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) current layer, shortcut (B, C_in, H, W) earlier layers -> (B, out_chs, H, W)."""
    b, c, h, w = x.shape
    s = module.d_proj(module.d_norm(shortcut))
    k, v = torch.chunk(s, 2, dim=1)
    q = module.q(x)
    k = module.k(k)
    v = module.v(v)
    hq, wq = q.shape[2:]
    g = c // module.dmca_heads
    # channel-to-channel attention per head: (B*heads, C/heads, L') x (B*heads, C/heads, L')
    attn = F.scaled_dot_product_attention(
        q.reshape(-1, g, hq * wq), k.reshape(-1, g, hq * wq), v.reshape(-1, g, h * w)
    ).reshape(b, c, h, w)
    if (hq, wq) == (h, w):  # no spatial reduction: the projected query stands in for x
        x = q
    y = torch.cat([x, attn, v], dim=1)
    y = y.reshape(b, c, 3, h, w).transpose(1, 2).reshape(b, 3 * c, h, w)  # channel shuffle, 3 groups
    y = module.in_proj(y)
    pad = module.channel_padding
    if pad == 1:
        y = torch.cat([y, y.mean(dim=1, keepdim=True)], dim=1)
    elif pad > 1:
        pooled = F.adaptive_avg_pool1d(y.flatten(2).transpose(1, 2), pad)  # (B, HW, pad)
        y = torch.cat([y, pooled.transpose(1, 2).reshape(b, pad, h, w)], dim=1)
    return y


class DMCA(nn.Module):
    """Stand-alone DMCA module: forward(x, shortcut) -> (B, out_chs, H, W)."""

    def __init__(self, dim: int, in_chs: int, out_chs: int, sr_ratio: int = 1, heads: int = 4):
        super().__init__()
        build_dmca(self, dim, in_chs, out_chs, sr_ratio, heads)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return dmca_forward(self, x, shortcut)
