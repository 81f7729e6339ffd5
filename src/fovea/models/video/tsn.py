"""TSN (Wang et al., ECCV 2016): a 2D network on T sampled frames, features averaged over the
segments (consensus) before dropout + linear, as MMAction2's TSNHead does (equal to averaging the
scores at eval: the classifier is linear). Input (B, C, T, H, W); frames are folded into the batch.

TSN-R50: torchvision ResNet-50 trunk, 24.33 M parameters with 400 classes, 32.70 GMACs at 8x224^2.
`Recognizer2d` is shared with TSM (tsm.py inserts temporal shifts into the same trunk).
"""

from __future__ import annotations

import torch
from torch import nn

from fovea.errors import ConfigError
from fovea.models.video._registry import register_video_model


class ResNetTrunk(nn.Module):
    """torchvision ResNet-50 without avgpool/fc (names kept: conv1, bn1, layer1..4).
    (N, 3, H, W) -> (N, 2048, H/32, W/32)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(net, name))
        self.num_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Lite0Trunk(nn.Module):
    """timm EfficientNet-Lite0 features (ImageNet weights from the offline package by default).
    (N, 3, H, W) -> (N, 1280, H/32, W/32)."""

    def __init__(self, weights: str | None = "default", in_channels: int = 3):
        super().__init__()
        from fovea.weights import create_backbone

        self.net = create_backbone("efficientnet_lite0", weights=weights, num_classes=0, global_pool="")
        if in_channels != 3:
            self.net.conv_stem = cross_modality_conv(self.net.conv_stem, in_channels)
        self.num_features = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def cross_modality_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """TSN's cross-modality initialisation: a first conv for `in_channels` (e.g. 10 stacked flow
    fields) whose kernel is the RGB kernel averaged over its input channels, repeated."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def make_trunk(name: str, weights: str | None = None, in_channels: int = 3) -> nn.Module:
    """A 2D trunk by name: "resnet50" (random init) or "lite0" (offline ImageNet weights)."""
    if name == "resnet50":
        if weights not in (None, "random"):
            raise ConfigError("resnet50 trunk: no offline ImageNet weights ship with fovea; use weights=None "
                              "(random) or the 'lite0' trunk")
        return ResNetTrunk(in_channels)
    if name == "lite0":
        return Lite0Trunk("default" if weights is None else weights, in_channels)
    raise ConfigError(f"unknown 2D trunk {name!r}; use 'resnet50' or 'lite0'")


class Recognizer2d(nn.Module):
    """Per-frame 2D trunk -> spatial average -> segment consensus (mean) -> dropout -> linear.

    forward (B, C, T, H, W) -> (B, K); `forward_frames` (B, C, T, H, W) -> per-frame pooled features
    (B, T, F); `features_only=True` returns the trunk maps as (B, F, T, h, w)."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5, features_only: bool = False):
        super().__init__()
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.features_only = features_only
        self.dropout = nn.Dropout(dropout)
        self.fc = None if features_only else nn.Linear(self.num_features, num_classes)

    def frame_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, T, F, h, w) trunk maps."""
        b, c, t, h, w = x.shape
        maps = self.backbone(x.transpose(1, 2).reshape(b * t, c, h, w))
        return maps.view(b, t, *maps.shape[1:])

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_maps(x).mean(dim=(3, 4))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, F, T, h, w)."""
        return self.frame_maps(x).transpose(1, 2)

    def forward_head(self, frame_feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) per-frame features -> (B, K) after consensus."""
        return self.fc(self.dropout(frame_feats.mean(dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features_only:
            return self.forward_features(x)
        return self.forward_head(self.forward_frames(x))


@register_video_model
def tsn_r50(*, num_classes: int = 400, dropout: float = 0.4, in_channels: int = 3,
            features_only: bool = False) -> Recognizer2d:
    """TSN-R50, MMAction2 `tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb` (random init)."""
    return Recognizer2d(ResNetTrunk(in_channels), num_classes, dropout, features_only)


@register_video_model
def tsn_lite0(*, num_classes: int = 400, dropout: float = 0.2, weights: str | None = "default",
              in_channels: int = 3, features_only: bool = False) -> Recognizer2d:
    """TSN on the offline ImageNet EfficientNet-Lite0."""
    return Recognizer2d(Lite0Trunk(weights, in_channels), num_classes, dropout, features_only)
