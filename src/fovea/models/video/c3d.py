"""C3D (Tran et al., ICCV 2015) in MMAction2's configuration: eight 3x3x3 convolutions, fc6/fc7.

Input (B, 3, 16, 112, 112) (Caffe mean [104, 117, 128], std 1) -> (B, num_classes).
78.41 M parameters with the 101-way UCF101 head, 38.55 GMACs per 16x112^2 view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.video._registry import register_video_model

_WIDTHS = ((64,), (128,), (256, 256), (512, 512), (512, 512))


class C3D(nn.Module):
    """Five conv groups (pool1 1x2x2, pools 2-5 2x2x2, pool5 spatially padded), fc6/fc7 4096 + head."""

    def __init__(self, num_classes: int = 101, in_channels: int = 3, dropout: float = 0.5,
                 head_dropout: float = 0.5, features_only: bool = False):
        super().__init__()
        self.features_only = features_only
        convs, c = [], in_channels
        for widths in _WIDTHS:
            for w in widths:
                convs.append(nn.Conv3d(c, w, 3, padding=1))
                c = w
        self.convs = nn.ModuleList(convs)
        self.pools = nn.ModuleList([nn.MaxPool3d((1, 2, 2), (1, 2, 2))] +
                                   [nn.MaxPool3d(2, 2) for _ in range(3)] +
                                   [nn.MaxPool3d(2, 2, padding=(0, 1, 1))])
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.dropout = nn.Dropout(dropout)
        self.num_features = 4096
        self.head = None if features_only else nn.Sequential(nn.Dropout(head_dropout), nn.Linear(4096, num_classes))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five pooled conv-group maps, (B, C_i, T_i, H_i, W_i)."""
        feats, i = [], 0
        for g, widths in enumerate(_WIDTHS):
            for _ in widths:
                x = F.relu(self.convs[i](x))
                i += 1
            x = self.pools[g](x)
            feats.append(x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 16, 112, 112) -> fc7 activations (B, 4096)."""
        x = self.forward_stages(x)[-1].flatten(1)
        x = self.dropout(F.relu(self.fc6(x)))
        return self.dropout(F.relu(self.fc7(x)))

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_stages(x)
        return self.forward_head(self.forward_features(x))


@register_video_model
def c3d(*, num_classes: int = 101, **kwargs) -> C3D:
    """C3D at 16x112^2 (MMAction2 `c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb`)."""
    return C3D(num_classes=num_classes, **kwargs)
