"""Small channels-first layers shared by the VMamba and SparX backbones.

All layers take and return (B, C, H, W) tensors. Parameter names and shapes follow the official
VMamba / SparX code so released checkpoints load with renames only. Norms, the MLP and patch
merging come from `timm.layers` / timm's Swin where their keys equal the official ones
(`GroupNorm1`, `Mlp` are used from timm directly); what stays here has no key-compatible timm
counterpart: VMamba's `Linear2d`, SparX's `ConvFFN` and its conv-shaped `LayerScale2d`.
"""

from __future__ import annotations

import timm.layers as timm_layers
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import PatchMerging
from torch import nn

__all__ = ["ConvFFN", "LayerNorm2d", "LayerScale2d", "Linear2d", "PatchMerging2d"]


class LayerNorm2d(timm_layers.LayerNorm2d):
    """timm's channels-first LayerNorm with torch's eps 1e-5 (the official VMamba value; timm's is 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_channels, eps=eps)


class Linear2d(nn.Linear):
    """A Linear applied per pixel of a (B, C, H, W) map, stored in nn.Linear layout (out, in).

    Loading accepts both the Linear layout and the 1x1-conv layout (out, in, 1, 1), as the
    official VMamba `Linear2d` does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 4 and state_dict[key].shape[2:] == (1, 1):
            state_dict[key] = state_dict[key].flatten(1)
        return super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ConvFFN(nn.Module):
    """SparX feed-forward: 1x1 expand, depthwise 3x3 residual, GELU, 1x1 project.

    h = fc1(x); h = act(h + dwconv(h)); y = fc2(h). Keys `fc1`, `dwconv`, `fc2` as in SparX `Mlp`.
    """

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.act(x + self.dwconv(x))
        return self.drop(self.fc2(self.drop(x)))


class LayerScale2d(nn.Module):
    """Per-channel affine map y = w * x + b on (B, C, H, W); SparX's `LayerScale`.

    Stored as a depthwise 1x1 conv: `weight` (C, 1, 1, 1), `bias` (C,), as in the official code.
    """

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PatchMerging2d(PatchMerging):
    """timm's Swin patch merging on channels-first maps: 2x2 sub-grids [0::2,0::2], [1::2,0::2],
    [0::2,1::2], [1::2,1::2] to 4C channels, LayerNorm, Linear(4C -> out) without bias; odd H/W are
    zero-padded. (B, C, H, W) -> (B, out, ceil(H/2), ceil(W/2)); keys `norm`, `reduction`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
