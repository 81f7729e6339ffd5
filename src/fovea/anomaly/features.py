"""Frozen multi-stage feature extraction from any timm backbone with `features_only`."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fovea.weights import create_backbone


class FeatureExtractor(nn.Module):
    """Frozen timm backbone returning the feature maps of `layers` (timm feature indices).

    forward(x (B, 3, H, W) normalised) -> list of (B, C_i, H / r_i, W / r_i).
    """

    def __init__(self, backbone: str, layers: Sequence[int], weights: str | None = "default"):
        super().__init__()
        self.backbone_name = backbone
        self.layers = tuple(int(i) for i in layers)
        self.net = create_backbone(backbone, weights=weights, features_only=True, out_indices=self.layers)
        self.weights_source = getattr(self.net, "fovea_weights", None)
        self.channels = list(self.net.feature_info.channels())
        self.reductions = list(self.net.feature_info.reduction())
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        super().train(mode)
        self.net.eval()  # BN statistics stay frozen even while a wrapper trains
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))
