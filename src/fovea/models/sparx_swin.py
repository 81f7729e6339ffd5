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
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from fovea.errors import ConfigError
from fovea.models._checkpoint import OfficialFormat, register_official
from fovea.models._staged import StagedBackbone, build_staged, classifier_head, default_cfg, drop_path_rates, init_weights
from fovea.models.sparx import SparseStage, ganglion_in_channels
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
        self.swin = SwinTransformerBlock(
            dim, resolution, num_heads=heads, window_size=window, shift_size=shift, dynamic_mask=True,
            mlp_ratio=mlp_ratio, drop_path=drop_path,
        )
        self.swin.attn.fused_attn = True  # timm gates Swin's SDPA path behind TIMM_FUSED_ATTN=2; same maths
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


def _stage(cfg: SparXSwinConfig, i: int, drop_path: list[float]) -> SparseStage:
    depth, dim, window = cfg.depths[i], cfg.dims[i], cfg.max_dense_depth[i]
    chs = ganglion_in_channels(depth, cfg.dense_step[i], cfg.dense_start[i], window, dim)
    res = cfg.img_size // (4 * 2**i)
    blocks = nn.ModuleList([
        SparXSwinBlock(dim, cfg.heads[i], cfg.window, 0 if j % 2 == 0 else cfg.window // 2, drop_path[j], (res, res),
                       cfg.mlp_ratio, chs.get(j), cfg.sr_ratios[i])
        for j in range(depth)
    ])
    down = PatchMerging2d(dim, cfg.dims[i + 1]) if i < len(cfg.dims) - 1 else nn.Identity()
    return SparseStage(blocks, list(chs), window, down)


class SparXSwin(StagedBackbone):
    """SparX-Swin classifier/backbone on (B, 3, H, W), H and W divisible by 32 (timm API: StagedBackbone)."""

    no_decay_keywords = ("relative_position_bias_table",)

    def __init__(self, cfg: SparXSwinConfig = SparXSwinConfig(), num_classes=1000, in_chans=3, drop_rate=0.0,
                 drop_path_rate=None, global_pool="avg"):
        super().__init__(cfg.dims, num_classes, drop_rate, global_pool)
        self.cfg = cfg
        dims = list(cfg.dims)
        dpr = drop_path_rates(cfg.depths, cfg.drop_path_rate if drop_path_rate is None else drop_path_rate)
        self.patch_embed = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4), LayerNorm2d(dims[0]))
        self.layers = nn.ModuleList(_stage(cfg, i, dpr[i]) for i in range(len(cfg.depths)))
        self.classifier = classifier_head(LayerNorm2d(dims[-1]), dims[-1], num_classes, named=True)
        self.apply(init_weights)


# ----------------------------------------------------------------------------- loading and timm registration
def _infer_variant(sd: dict[str, torch.Tensor]) -> str:
    """Only the paper's SparX-Swin-T exists; check the stage depths and widths against it."""
    cfg = SparXSwinConfig()
    depths = tuple(len({k.split(".")[3] for k in sd if k.startswith(f"layers.{i}.blocks.")}) for i in range(4))
    dims = tuple(sd[f"layers.{i}.blocks.0.swin.norm1.weight"].shape[0] for i in range(4)
                 if f"layers.{i}.blocks.0.swin.norm1.weight" in sd)
    if (depths, dims) != (cfg.depths, cfg.dims):
        raise ConfigError(
            f"checkpoint (depths {depths}, dims {dims}) is not SparX-Swin-T {cfg.depths}/{cfg.dims}. "
            "Fix: build the model with its SparXSwinConfig and pass it as model=..."
        )
    return "sparx_swin_t"


def _rename(key: str, value: torch.Tensor):
    """fovea's earlier layout kept the head norm and head at top level (`norm.`, `head.`)."""
    if key.startswith(("norm.", "head.")):
        key = "classifier." + key
    return key, value


# No official weights exist: the format reads state dicts saved from this implementation.
register_official(OfficialFormat(
    family="sparx_swin", model_type=SparXSwin, rename=_rename,
    detect=lambda sd: any(".swin.attn." in k for k in sd), infer_variant=_infer_variant,
    build=lambda name, n: SparXSwin(SparXSwinConfig(), num_classes=n), head_key="classifier.head.weight",
))
default_cfgs = generate_default_cfgs({"sparx_swin_t": default_cfg("classifier.head", crop_pct=0.9)})


@register_model
def sparx_swin_t(pretrained: bool = False, **kwargs) -> SparXSwin:
    """SparX-Swin-T built from the paper's rules (no official code or weights exist)."""
    return build_staged(SparXSwin, "sparx_swin_t", pretrained, SparXSwinConfig(), **kwargs)
