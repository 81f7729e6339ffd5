"""SparX-Swin-T: Swin-T blocks with SparX's sparse cross-layer connections.

The SparX authors released no code for this model, so it is built from the paper's rules, with
these choices (all ours):
- Macro: Swin-T (patch 4 conv + LayerNorm, depths 2-2-6-2, dims 96-192-384-768, heads 3-6-12-24,
  window 7, alternating shifted windows, MLP ratio 4, patch merging, drop path 0.2); the Swin
  blocks are timm's `SwinTransformerBlock` (relative position bias, dynamic masks so any input
  divisible by 32 works).
- Ganglion layers follow SparX-Mamba-T's rule per stage (S = 1,1,2,1; start 100,1,0,0;
  window M = 100,100,3,100), i.e. blocks [], [1], [1,3,5], [0,1]; stage input seeds the first
  aggregation, as in SparX-Mamba.
- In a ganglion block DMCA(LN(x), earlier layers) replaces the attention input (the analogue of
  replacing SS2D's in_proj in SparX-Mamba), with spatial-reduction rates 8,4,2,1 and 4 heads;
  the MLP branch is unchanged. No extra position encoding or layer scale (Swin keeps its
  relative position bias).
Feature maps travel channels-first (B, C, H, W) between blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from fovea.models.sparx import ganglion_in_channels, sparse_route
from fovea.nn.dmca import DMCA
from fovea.nn.layers import LayerNorm2d, PatchMerging2d

__all__ = ["SparXSwin", "SparXSwinConfig"]


@dataclass(frozen=True)
class SparXSwinConfig:
    depths: tuple[int, ...] = (2, 2, 6, 2)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    heads: tuple[int, ...] = (3, 6, 12, 24)
    window: int = 7
    mlp_ratio: float = 4.0
    dense_step: tuple[int, ...] = (1, 1, 2, 1)
    dense_start: tuple[int, ...] = (100, 1, 0, 0)
    max_dense_depth: tuple[int, ...] = (100, 100, 3, 100)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    drop_path_rate: float = 0.2
    img_size: int = 224


class SparXSwinBlock(nn.Module):
    """Swin block on (B, C, H, W); a ganglion block feeds DMCA(LN(x), shortcut) to the attention."""

    def __init__(self, dim, heads, window, shift, drop_path, resolution, mlp_ratio, ganglion_chs=None, sr=1):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformerBlock

        self.swin = SwinTransformerBlock(
            dim, resolution, num_heads=heads, window_size=window, shift_size=shift, dynamic_mask=True,
            mlp_ratio=mlp_ratio, drop_path=drop_path,
        )
        self.dmca = DMCA(dim, ganglion_chs, dim, sr) if ganglion_chs else None

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1)
        y = self.swin.norm1(t)
        if self.dmca is not None:
            y = self.dmca(y.permute(0, 3, 1, 2), shortcut).permute(0, 2, 3, 1)
        t = t + self.swin.drop_path1(self.swin._attn(y))
        t = t + self.swin.drop_path2(self.swin.mlp(self.swin.norm2(t)))
        return t.permute(0, 3, 1, 2)


class SparXSwinStage(nn.Module):
    def __init__(self, cfg: SparXSwinConfig, i: int, dpr: list[float], downsample: nn.Module):
        super().__init__()
        depth, dim = cfg.depths[i], cfg.dims[i]
        self.window = cfg.max_dense_depth[i]
        chs = ganglion_in_channels(depth, cfg.dense_step[i], cfg.dense_start[i], self.window, dim)
        self.ganglion = sorted(chs)
        res = cfg.img_size // (4 * 2**i)
        self.blocks = nn.ModuleList([
            SparXSwinBlock(dim, cfg.heads[i], cfg.window, 0 if j % 2 == 0 else cfg.window // 2, dpr[j], (res, res),
                           cfg.mlp_ratio, chs.get(j), cfg.sr_ratios[i])
            for j in range(depth)
        ])
        self.downsample = downsample

    def forward_blocks(self, x):
        return sparse_route(self.blocks, self.ganglion, self.window, x)

    def forward(self, x):
        return self.downsample(self.forward_blocks(x))


class SparXSwin(nn.Module):
    """SparX-Swin classifier/backbone on (B, 3, H, W), H and W divisible by 32; timm API as SparXMamba."""

    def __init__(self, cfg: SparXSwinConfig = SparXSwinConfig(), num_classes=1000, in_chans=3, drop_rate=0.0,
                 drop_path_rate=None, global_pool="avg"):
        super().__init__()
        self.cfg = cfg
        dims = list(cfg.dims)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate, self.global_pool = drop_rate, global_pool
        total = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
        dpr = torch.linspace(0, total, sum(cfg.depths), device="cpu").tolist()
        self.patch_embed = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4), LayerNorm2d(dims[0]))
        self.layers = nn.ModuleList()
        self.feature_info = []
        start = 0
        for i, depth in enumerate(cfg.depths):
            down = PatchMerging2d(dims[i], dims[i + 1]) if i < len(dims) - 1 else nn.Identity()
            self.layers.append(SparXSwinStage(cfg, i, dpr[start:start + depth], down))
            start += depth
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"layers.{i}"))
        self.norm = LayerNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        x = self.norm(x)
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        feats, x = [], self.patch_embed(x)
        for i, layer in enumerate(self.layers):
            x = layer.forward_blocks(x)
            if i in take:
                feats.append(self.norm(x) if norm and i == len(self.layers) - 1 else x)
            if stop_early and i >= max_index:
                break
            x = layer.downsample(x)
        return feats if intermediates_only else (x, feats)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm or max_index < 3:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


def _init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _cfg(**kwargs):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.9,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "patch_embed.0", "classifier": "head", **kwargs}


default_cfgs = generate_default_cfgs({"sparx_swin_t": _cfg()})


@register_model
def sparx_swin_t(pretrained: bool = False, **kwargs) -> SparXSwin:
    """SparX-Swin-T built from the paper's rules (no official code or weights exist)."""
    from timm.models import build_model_with_cfg

    cfg = kwargs.pop("cfg", None) or SparXSwinConfig()
    return build_model_with_cfg(
        SparXSwin, "sparx_swin_t", pretrained, cfg=cfg,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"), **kwargs,
    )
