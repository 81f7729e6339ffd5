"""The staged-backbone base shared by VMamba, SparX-Mamba and SparX-Swin.

All three are: a stem `patch_embed` -> four stages `layers[i]` (blocks, then a downsample; features
at strides 4, 8, 16, 32) -> `classifier`, a Sequential (norm, avgpool, flatten, head). The base gives
them the timm API once: `forward_features`, `forward_head`, `forward_intermediates` (what
`features_only=True` uses), `reset_classifier`, `prune_intermediate_layers`, the official weight
init and the timm builder. Feature maps are channels-first (B, C, H, W) everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Stage", "StagedBackbone", "build_staged", "default_cfg", "drop_path_rates", "init_weights"]


class Stage(nn.Module):
    """`blocks` then `downsample` (Identity after the last stage); official key layout.

    Subclasses with cross-layer routing override `forward_blocks`.
    """

    def __init__(self, blocks: nn.Module, downsample: nn.Module):
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


def drop_path_rates(depths, total: float) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to `total` over all blocks, split per stage."""
    rates = torch.linspace(0, total, sum(depths), device="cpu").tolist()
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out


def classifier_head(norm: nn.Module, dim: int, num_classes: int, named: bool) -> nn.Sequential:
    """(norm, avgpool, flatten, head) as one Sequential; `named` gives VMamba's keys
    (`classifier.norm`, `classifier.head`), otherwise SparX's (`classifier.0`, `classifier.3`)."""
    parts = [norm, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()]
    if named:
        return nn.Sequential(OrderedDict(zip(("norm", "avgpool", "flatten", "head"), parts)))
    return nn.Sequential(*parts)


def init_weights(m: nn.Module, convs: bool = False) -> None:
    """Official init: trunc-normal(0.02) on Linear (and every Conv2d when `convs`, as SparX does),
    zero biases, norms weight 1 / bias 0. Use with `model.apply(partial(init_weights, ...))`."""
    if isinstance(m, nn.Linear) or (convs and isinstance(m, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)) and m.weight is not None:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class StagedBackbone(nn.Module):
    """Base of the four-stage backbones on (B, 3, H, W), H and W divisible by 32.

    A subclass calls `super().__init__(dims, ...)`, then sets `patch_embed`, `layers` (four
    `Stage`s) and `classifier` (from `classifier_head`) and applies `init_weights`.
    """

    no_decay_keywords: tuple[str, ...] = ("A_logs", "Ds")

    def __init__(self, dims, num_classes: int, drop_rate: float, global_pool: str):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.feature_info = [dict(num_chs=c, reduction=4 * 2**i, module=f"layers.{i}") for i, c in enumerate(dims)]

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        """Parameter-name fragments timm's optimizer factory keeps out of weight decay."""
        return set(self.no_decay_keywords)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head with `num_classes` outputs (0: pooled features)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.classifier[-1] = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C4, H/32, W/32), before the head norm."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C4, h, w) -> logits (B, num_classes), or pooled features (B, C4) with `pre_logits`."""
        x = self.classifier[0](x)
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self, x, indices=None, norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs (B, C_i, H/4/2^i, W/4/2^i) before each downsample; `norm` applies the head
        norm to the last stage."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        feats = []
        x = self.patch_embed(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.forward_blocks(x)
            if i in take:
                feats.append(self.classifier[0](x) if norm and i == last else x)
            if stop_early and i >= max_index:
                break
            x = layer.downsample(x)
        return feats if intermediates_only else (x, feats)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        """Drop the stages after the last one `indices` asks for (timm's features_only path)."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.classifier[0] = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


def default_cfg(classifier: str, **kwargs) -> dict:
    """timm pretrained-config entry of a 224 px ImageNet backbone (no download URL)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.0", "classifier": classifier, **kwargs,
    }


def build_staged(cls: type, variant: str, pretrained: bool, default, filter_fn: Callable | None = None, **kwargs):
    """timm `build_model_with_cfg` for a StagedBackbone; `cfg=...` in kwargs overrides the
    architecture `default` (tests, ablations)."""
    from timm.models import build_model_with_cfg

    cfg = kwargs.pop("cfg", None) or default
    return build_model_with_cfg(
        cls, variant, pretrained, cfg=cfg, pretrained_filter_fn=filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"), **kwargs,
    )
