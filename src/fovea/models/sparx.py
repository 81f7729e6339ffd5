"""SparX-Mamba (Lou, Fu, Yu, AAAI 2025): VMamba-style blocks with sparse cross-layer connections.

Per stage, "ganglion" layers sit every S layers counted back from the stage's last block (from
`dense_start` on). A ganglion layer aggregates, through DMCA, the normal layers since the previous
ganglion layer (the stage input seeds the first aggregation) and the last M ganglion outputs
(sliding window). Every block has a depthwise 3x3 position encoding, a ConvFFN and (stages 3-4)
layer scale on the identity path. Keys equal the official `models/sparx_mamba.py`, except that
`x_proj_weight` is stored as (K, R+2N, D) instead of (K*(R+2N), D, 1); `fovea.models.load_official`
reshapes.

SparX-Swin-T (`sparx_swin_t`) is built in `fovea.models.sparx_swin` from the paper's rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from functools import partial

import torch
from timm.layers import DropPath, GroupNorm1
from timm.models import generate_default_cfgs, register_model
from torch import nn

from fovea.errors import ConfigError
from fovea.models._checkpoint import OfficialFormat, filter_official, register_official
from fovea.models._staged import Stage, StagedBackbone, build_staged, classifier_head, default_cfg, drop_path_rates, init_weights
from fovea.nn.dmca import build_dmca, dmca_forward
from fovea.nn.layers import ConvFFN, LayerScale2d
from fovea.nn.ss2d import SS2DCore

__all__ = ["SPARX_CONFIGS", "SparXConfig", "SparXMamba", "SparseStage", "ganglion_in_channels", "ganglion_indices"]


@dataclass(frozen=True)
class SparXConfig:
    """One SparX-Mamba variant (official factory values). Per-stage tuples have 4 entries."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    stem: str  # "v1" two conv3x3 s2, "v2" adds a conv3x3 s1
    dense_step: tuple[int, ...]  # S
    dense_start: tuple[int, ...]
    max_dense_depth: tuple[int, ...]  # M (100 = unlimited)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    ssm_ratio: tuple[float, ...] = (2.0, 2.0, 2.0, 2.0)
    mlp_ratio: tuple[float, ...] = (4.0, 4.0, 4.0, 4.0)
    ls_init: tuple[float | None, ...] = (None, None, 1.0, 1.0)
    d_state: int = 1
    d_conv: int = 5
    drop_path_rate: float = 0.0
    crop_pct: float = 0.9


def ganglion_indices(depth: int, step: int, start: int) -> list[int]:
    """Ganglion block indices of a stage: every `step` blocks back from the last, down to `start`."""
    return list(range(depth - 1, start - 1, -step))[::-1]


SPARX_CONFIGS: dict[str, SparXConfig] = {
    "sparx_mamba_t": SparXConfig((2, 2, 7, 2), (96, 192, 320, 512), "v1", (1, 1, 2, 1), (100, 1, 0, 0),
                                 (100, 100, 3, 100), drop_path_rate=0.2, crop_pct=0.9),
    "sparx_mamba_s": SparXConfig((2, 2, 17, 2), (96, 192, 328, 544), "v2", (1, 1, 3, 1), (100, 1, 0, 0),
                                 (100, 100, 3, 100), drop_path_rate=0.3, crop_pct=0.95),
    "sparx_mamba_b": SparXConfig((2, 2, 21, 3), (120, 240, 396, 636), "v2", (1, 1, 3, 2), (100, 1, 0, 2),
                                 (100, 100, 3, 100), drop_path_rate=0.5, crop_pct=0.95),
}


def ganglion_in_channels(depth: int, step: int, start: int, window: int, dim: int) -> dict[int, int]:
    """Channels each ganglion layer aggregates, found by replaying the stage's routing."""
    idx = set(ganglion_indices(depth, step, start))
    inner, cross, out = 1, 0, {}  # inner list seeded with the stage input
    for j in range(depth):
        if j in idx:
            out[j] = (inner + cross) * dim
            cross, inner = min(cross + 1, window), 0
        else:
            inner += 1
    return out


class SparseStage(Stage):
    """A stage with SparX routing: ganglion block j gets x and cat(normal outputs since the last
    ganglion, last `window` ganglion outputs); the stage input seeds the first aggregation.

    `blocks[j](x)` for normal blocks, `blocks[j](x, shortcut)` for ganglion blocks.
    """

    def __init__(self, blocks: nn.ModuleList, ganglion: list[int], window: int, downsample: nn.Module):
        super().__init__(blocks, downsample)
        self.ganglion = sorted(ganglion)
        self.window = window

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        inner, cross = [x], []  # normal outputs since the last ganglion; last `window` ganglion outputs
        for j, block in enumerate(self.blocks):
            if j in self.ganglion:
                x = block(x, torch.cat(inner + cross, dim=1))
                cross = (cross + [x])[-self.window:]
                inner = []
            else:
                x = block(x)
                inner.append(x)
        return x


class SparXSS2D(SS2DCore):
    """SparX token mixer. Normal: 1x1 in_proj; ganglion: DMCA(x, earlier layers) replaces it.

    Then DWConv5x5 -> SiLU -> SS2D scan -> GroupNorm -> 1x1 out_proj, on (B, C, H, W).
    """

    def __init__(self, dim: int, cfg: SparXConfig, stage: int, ganglion_chs: int | None = None):
        super().__init__()
        d_inner = int(dim * cfg.ssm_ratio[stage])
        self.is_ganglion = ganglion_chs is not None
        if self.is_ganglion:
            build_dmca(self, dim, ganglion_chs, d_inner, cfg.sr_ratios[stage])
        else:
            self.in_proj = nn.Conv2d(dim, d_inner, 1)
        self.conv2d = nn.Conv2d(d_inner, d_inner, cfg.d_conv, padding=(cfg.d_conv - 1) // 2, groups=d_inner)
        self.act = nn.SiLU()
        self._init_ssm(d_inner, cfg.d_state, math.ceil(dim / 16))
        self.out_norm = GroupNorm1(d_inner)
        self.out_proj = nn.Conv2d(d_inner, dim, 1)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        x = dmca_forward(self, x, shortcut) if self.is_ganglion else self.in_proj(x)
        x = self.act(self.conv2d(x))
        y = self.out_norm(self.forward_ssm(x))
        return self.out_proj(y.to(x.dtype))


class SparXBlock(nn.Module):
    """x += DWConv3x3(x); x = LS1(x) + DropPath(SS2D(GN(x), shortcut)); x = LS2(x) + DropPath(FFN(GN(x)))."""

    def __init__(self, dim: int, cfg: SparXConfig, stage: int, drop_path: float, ganglion_chs: int | None):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = GroupNorm1(dim)
        self.op = SparXSS2D(dim, cfg, stage, ganglion_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = GroupNorm1(dim)
        self.mlp = ConvFFN(dim, int(dim * cfg.mlp_ratio[stage]))
        ls = cfg.ls_init[stage]
        self.layerscale_1 = LayerScale2d(dim, ls) if ls is not None else nn.Identity()
        self.layerscale_2 = LayerScale2d(dim, ls) if ls is not None else nn.Identity()

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = self.layerscale_1(x) + self.drop_path(self.op(self.norm(x), shortcut))
        return self.layerscale_2(x) + self.drop_path(self.mlp(self.norm2(x)))


def _stem(version: str, in_chans: int, dim: int) -> nn.Sequential:
    half = dim // 2
    layers = [nn.Conv2d(in_chans, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.GELU()]
    if version == "v2":
        layers += [nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.BatchNorm2d(half), nn.GELU()]
    elif version != "v1":
        raise ConfigError(f"SparX stem {version!r} unknown. Fix: use 'v1' or 'v2'.")
    layers += [nn.Conv2d(half, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim)]
    return nn.Sequential(*layers)


def _stage(cfg: SparXConfig, i: int, drop_path: list[float]) -> SparseStage:
    dim, depth, window = cfg.dims[i], cfg.depths[i], cfg.max_dense_depth[i]
    chs = ganglion_in_channels(depth, cfg.dense_step[i], cfg.dense_start[i], window, dim)
    blocks = nn.ModuleList([SparXBlock(dim, cfg, i, drop_path[j], chs.get(j)) for j in range(depth)])
    down = (
        nn.Sequential(nn.Conv2d(dim, cfg.dims[i + 1], 3, 2, 1, bias=False), nn.BatchNorm2d(cfg.dims[i + 1]))
        if i < 3 else nn.Identity()
    )
    return SparseStage(blocks, list(chs), window, down)


class SparXMamba(StagedBackbone):
    """SparX-Mamba classifier/backbone on (B, 3, H, W), H and W divisible by 32 (timm API: StagedBackbone)."""

    def __init__(
        self,
        cfg: SparXConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        global_pool: str = "avg",
    ):
        if len(cfg.depths) != 4:
            raise ConfigError(f"SparX needs 4 stages, got depths {cfg.depths}. Fix: pass four depths.")
        super().__init__(cfg.dims, num_classes, drop_rate, global_pool)
        self.cfg = cfg
        dpr = drop_path_rates(cfg.depths, cfg.drop_path_rate if drop_path_rate is None else drop_path_rate)
        self.patch_embed = _stem(cfg.stem, in_chans, cfg.dims[0])
        self.layers = nn.ModuleList(_stage(cfg, i, dpr[i]) for i in range(4))
        self.classifier = classifier_head(GroupNorm1(cfg.dims[-1]), cfg.dims[-1], num_classes, named=False)
        self.apply(partial(init_weights, convs=True))  # official: every Linear and Conv2d trunc-normal(0.02)


# ----------------------------------------------------------------------------- official weights
_X_PROJ = re.compile(r".*\.op\.x_proj_weight$")


def _rename(key: str, value: torch.Tensor):
    """Official SparX keys equal fovea's; only the fused x_proj layout differs."""
    if _X_PROJ.match(key) and value.dim() == 3 and value.shape[-1] == 1:
        value = value.reshape(4, -1, value.shape[1])  # (K*(R+2N), D, 1) -> (K, R+2N, D)
    return key, value


def _infer_variant(sd: dict[str, torch.Tensor]) -> str:
    depths = tuple(len({k.split(".")[3] for k in sd if k.startswith(f"layers.{i}.blocks.")}) for i in range(4))
    dims = tuple(sd[f"layers.{i}.blocks.0.pos_embed.weight"].shape[0] for i in range(4)
                 if f"layers.{i}.blocks.0.pos_embed.weight" in sd)
    for name, cfg in SPARX_CONFIGS.items():
        if cfg.depths == depths and cfg.dims == dims:
            return name
    raise ConfigError(
        f"checkpoint matches no SparX-Mamba variant (depths {depths}, dims {dims}). "
        "Fix: build the model yourself and pass it as model=..."
    )


register_official(OfficialFormat(
    family="sparx", model_type=SparXMamba, rename=_rename,
    detect=lambda sd: any(k.endswith("pos_embed.weight") for k in sd) and any(k.endswith("A_logs") for k in sd),
    infer_variant=_infer_variant, build=lambda name, n: SparXMamba(SPARX_CONFIGS[name], num_classes=n),
    head_key="classifier.3.weight",
))


# ----------------------------------------------------------------------------- timm registration
def _create(variant: str, pretrained: bool = False, **kwargs) -> SparXMamba:
    return build_staged(SparXMamba, variant, pretrained, SPARX_CONFIGS[variant], filter_official, **kwargs)


default_cfgs = generate_default_cfgs(
    {name: default_cfg("classifier.3", crop_pct=c.crop_pct, license="apache-2.0") for name, c in SPARX_CONFIGS.items()}
)


@register_model
def sparx_mamba_t(pretrained: bool = False, **kwargs) -> SparXMamba:
    """SparX-Mamba-T: 27,051,794 params (official code; README says 25M)."""
    return _create("sparx_mamba_t", pretrained, **kwargs)


@register_model
def sparx_mamba_s(pretrained: bool = False, **kwargs) -> SparXMamba:
    """SparX-Mamba-S: 47,444,712 params."""
    return _create("sparx_mamba_s", pretrained, **kwargs)


@register_model
def sparx_mamba_b(pretrained: bool = False, **kwargs) -> SparXMamba:
    """SparX-Mamba-B: 83,536,168 params."""
    return _create("sparx_mamba_b", pretrained, **kwargs)
