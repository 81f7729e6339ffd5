"""SlowFast (Feichtenhofer et al., ICCV 2019), MMAction2's R50 4x16 configuration.

A 32-frame clip (B, 3, 32, H, W): the slow pathway sees every alpha=8th frame (4 frames; raw
stride 16 at sampling interval 2) at full width, the fast pathway all 32 frames at width
beta = 1/8. Lateral connections (Conv3d 5x1x1, temporal stride 8, 2x the fast channels) after
the stem and res2-res4 are concatenated into the slow pathway. Slow temporal kernels only in
res4/res5 (inflate (0,0,1,1)); fast conv1 5x7x7. Head: pooled 2048 + 256 -> linear.
34.48 M parameters with 400 classes, 27.64 GMACs at 32x224^2 (36.3 at MMAction2's 256^2).
"""

from __future__ import annotations

import torch
from torch import nn

from fovea.models.video._registry import register_video_model
from fovea.models.video.resnet3d import ResNet3d, TemporalPadConv3d


class SlowFast(nn.Module):
    """forward (B, 3, T, H, W) -> (B, K); `forward_features` -> (slow (B, 2048, T/8, h, w), fast (B, 256, T, h, w))."""

    def __init__(self, num_classes: int = 400, *, alpha: int = 8, beta_inv: int = 8, fusion_kernel: int = 5,
                 resample_rate: int = 8, lateral_norm: bool = False, dropout: float = 0.5,
                 features_only: bool = False):
        super().__init__()
        self.alpha, self.resample_rate = alpha, resample_rate
        self.features_only = features_only
        fast_base = 64 // beta_inv
        fast_widths = [fast_base] + [fast_base * 4 * 2 ** i for i in range(3)]            # 8, 32, 64, 128
        lateral = [2 * c for c in fast_widths]                                              # 16, 64, 128, 256
        self.slow = ResNet3d(50, conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1, with_pool2=False,
                             inflate=(0, 0, 1, 1), lateral_channels=lateral)
        self.fast = ResNet3d(50, base_channels=fast_base, conv1_kernel=(5, 7, 7), conv1_stride_t=1,
                             pool1_stride_t=1, with_pool2=False, inflate=(1, 1, 1, 1))
        pad = (fusion_kernel - 1) // 2
        self.laterals = nn.ModuleList(self._lateral(c, fusion_kernel, alpha, pad, lateral_norm) for c in fast_widths)
        self.num_features = self.slow.num_features + self.fast.num_features
        self.dropout = nn.Dropout(dropout)
        self.fc = None if features_only else nn.Linear(self.num_features, num_classes)

    @staticmethod
    def _lateral(c: int, k: int, alpha: int, pad: int, norm: bool) -> nn.Module:
        """Fast -> slow fusion: Conv3d (k,1,1) stride (alpha,1,1) to 2c channels (+ BN, ReLU in PySlowFast)."""
        conv = TemporalPadConv3d(c, 2 * c, (k, 1, 1), (alpha, 1, 1), (pad, 0, 0), bias=False)
        return nn.Sequential(conv, nn.BatchNorm3d(2 * c), nn.ReLU(inplace=True)) if norm else conv

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both pathways' last maps; the slow input is frames 0, rate, 2 rate, ... (nearest resampling)."""
        slow = self.slow.stem(x[:, :, ::self.resample_rate])
        fast = self.fast.stem(x[:, :, ::max(self.resample_rate // self.alpha, 1)])
        slow = torch.cat([slow, self.laterals[0](fast)], dim=1)
        for i in range(4):
            slow = getattr(self.slow, f"layer{i + 1}")(slow)
            fast = getattr(self.fast, f"layer{i + 1}")(fast)
            if i < 3:
                slow = torch.cat([slow, self.laterals[i + 1](fast)], dim=1)
        return slow, fast

    def forward_head(self, feats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([f.mean(dim=(2, 3, 4)) for f in feats], dim=1)
        return self.fc(self.dropout(pooled))

    def forward(self, x: torch.Tensor):
        feats = self.forward_features(x)
        return feats if self.features_only else self.forward_head(feats)


@register_video_model
def slowfast_r50(*, num_classes: int = 400, **kwargs) -> SlowFast:
    """SlowFast-R50 4x16, MMAction2 `slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb` (32 frames in)."""
    return SlowFast(num_classes, **kwargs)


@register_video_model
def slowfast_r50_8x8(*, num_classes: int = 400, **kwargs) -> SlowFast:
    """SlowFast-R50 8x8 as PySlowFast / PyTorchVideo `slowfast_r50` build it: 32 frames in, slow sees
    every 4th (8 frames), alpha 4, fusion kernel 7 with BN + ReLU on the laterals (34.57 M params)."""
    kwargs.setdefault("alpha", 4)
    kwargs.setdefault("resample_rate", 4)
    kwargs.setdefault("fusion_kernel", 7)
    kwargs.setdefault("lateral_norm", True)
    return SlowFast(num_classes, **kwargs)
