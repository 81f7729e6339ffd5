"""VMamba (Liu et al., NeurIPS 2024): visual state-space backbone with SS2D four-way scans.

Families, with the official configurations (MzeroMiko/VMamba `classification/configs/vssm`):
vanilla v0 (T/S/B: d_state 16, gated SS2D, no MLP, Swin patch merging), v2 `s2lX` (d_state 1,
ssm_ratio 2, `v05_noz`) and the final v2v `s1lX` (d_state 1, ssm_ratio 1, `v05_noz`).
Everything runs channels-first (B, C, H, W); a channels-last LayerNorm over C is the same map,
so one implementation covers the `ln` and `ln2d` variants. State-dict keys equal the official
ones (Linear layout for 1x1 projections), so `fovea.models.load_official` maps them almost by
identity (early releases' names are renamed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.layers import DropPath, Mlp
from timm.models import generate_default_cfgs, register_model
from torch import nn

from fovea.errors import ConfigError
from fovea.models._checkpoint import OfficialFormat, filter_official, register_official
from fovea.models._staged import Stage, StagedBackbone, build_staged, classifier_head, default_cfg, drop_path_rates, init_weights
from fovea.nn.layers import LayerNorm2d, Linear2d, PatchMerging2d
from fovea.nn.ss2d import SS2DCore

__all__ = ["SS2D", "VMAMBA_CONFIGS", "VMamba", "VMambaConfig", "VSSBlock"]


@dataclass(frozen=True)
class VMambaConfig:
    """One released VMamba variant (official yaml values)."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    d_state: int
    ssm_ratio: float
    mlp_ratio: float
    forward_type: str  # "v0" (gated, channels-last LN) or "v05_noz" (no gate, LayerNorm2d out norm)
    downsample: str  # "v1" patch merging, "v3" conv3x3 s2 + norm
    patch_embed: str  # "v1" conv4x4 s4 + norm, "v2" two conv3x3 s2 with norm/GELU
    conv_bias: bool
    drop_path_rate: float
    d_conv: int = 3
    dt_rank: str | int = "auto"


def _dims(c: int) -> tuple[int, ...]:
    return (c, 2 * c, 4 * c, 8 * c)


_V0 = dict(d_state=16, ssm_ratio=2.0, mlp_ratio=0.0, forward_type="v0", downsample="v1", patch_embed="v1", conv_bias=True)
_V2 = dict(d_state=1, ssm_ratio=2.0, mlp_ratio=4.0, forward_type="v05_noz", downsample="v3", patch_embed="v2", conv_bias=False)
_V2V = dict(_V2, ssm_ratio=1.0)

VMAMBA_CONFIGS: dict[str, VMambaConfig] = {
    "vmamba_tiny_v0": VMambaConfig((2, 2, 9, 2), _dims(96), drop_path_rate=0.2, **_V0),
    "vmamba_small_v0": VMambaConfig((2, 2, 27, 2), _dims(96), drop_path_rate=0.3, **_V0),
    "vmamba_base_v0": VMambaConfig((2, 2, 27, 2), _dims(128), drop_path_rate=0.6, **_V0),
    "vmamba_tiny_s2l5": VMambaConfig((2, 2, 5, 2), _dims(96), drop_path_rate=0.2, **_V2),
    "vmamba_small_s2l15": VMambaConfig((2, 2, 15, 2), _dims(96), drop_path_rate=0.3, **_V2),
    "vmamba_base_s2l15": VMambaConfig((2, 2, 15, 2), _dims(128), drop_path_rate=0.6, **_V2),
    "vmamba_tiny_s1l8": VMambaConfig((2, 2, 8, 2), _dims(96), drop_path_rate=0.2, **_V2V),
    "vmamba_small_s1l20": VMambaConfig((2, 2, 20, 2), _dims(96), drop_path_rate=0.3, **_V2V),
    "vmamba_base_s1l20": VMambaConfig((2, 2, 20, 2), _dims(128), drop_path_rate=0.5, **_V2V),
}


class SS2D(SS2DCore):
    """VMamba token mixer on (B, C, H, W).

    v05_noz: in_proj -> DWConv -> SiLU -> SS2D scan -> LayerNorm2d -> out_proj.
    v0:      in_proj -> (x, z); x -> DWConv -> SiLU -> scan -> LayerNorm -> * SiLU(z) -> out_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        dt_rank: str | int = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        forward_type: str = "v05_noz",
        dropout: float = 0.0,
    ):
        super().__init__()
        if forward_type not in ("v0", "v05_noz"):
            raise ConfigError(f"SS2D forward_type {forward_type!r} is not supported. Fix: use 'v0' or 'v05_noz'.")
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.gated = forward_type == "v0"
        self.in_proj = Linear2d(d_model, d_inner * (2 if self.gated else 1), bias=False)
        self.act = nn.SiLU()
        self.conv2d = (
            nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
            if d_conv > 1
            else nn.Identity()
        )
        self._init_ssm(d_inner, d_state, rank)
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Linear2d(d_inner, d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_proj(x)
        if self.gated:
            x, z = x.chunk(2, dim=1)
        x = self.act(self.conv2d(x))
        y = self.out_norm(self.forward_ssm(x)).to(x.dtype)
        if self.gated:
            y = y * self.act(z)
        return self.dropout(self.out_proj(y))


class VSSBlock(nn.Module):
    """x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x))) when mlp_ratio > 0.

    The MLP branch runs channels-last (timm `Mlp`, nn.Linear layout as the official `Linear2d`).
    """

    def __init__(self, dim: int, cfg: VMambaConfig, drop_path: float = 0.0):
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, cfg.d_state, cfg.ssm_ratio, cfg.dt_rank, cfg.d_conv, cfg.conv_bias, cfg.forward_type)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp_branch = cfg.mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2))
        return x


def _patch_embed(version: str, in_chans: int, dim: int) -> nn.Sequential:
    if version == "v1":  # conv 4x4 s4 + norm; index layout of the official Sequential
        return nn.Sequential(nn.Conv2d(in_chans, dim, 4, 4), nn.Identity(), LayerNorm2d(dim))
    if version == "v2":
        return nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, 2, 1), nn.Identity(), LayerNorm2d(dim // 2), nn.Identity(), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, 2, 1), nn.Identity(), LayerNorm2d(dim),
        )
    raise ConfigError(f"patch_embed version {version!r} unknown. Fix: use 'v1' or 'v2'.")


def _downsample(version: str, dim: int, out_dim: int) -> nn.Module:
    if version == "v1":
        return PatchMerging2d(dim, out_dim)
    if version == "v3":
        return nn.Sequential(nn.Identity(), nn.Conv2d(dim, out_dim, 3, 2, 1), nn.Identity(), LayerNorm2d(out_dim))
    raise ConfigError(f"downsample version {version!r} unknown. Fix: use 'v1' or 'v3'.")


class VMamba(StagedBackbone):
    """VMamba classifier/backbone on (B, 3, H, W) with H, W divisible by 32 (timm API: StagedBackbone)."""

    def __init__(
        self,
        cfg: VMambaConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        global_pool: str = "avg",
    ):
        super().__init__(cfg.dims, num_classes, drop_rate, global_pool)
        self.cfg = cfg
        dims = list(cfg.dims)
        dpr = drop_path_rates(cfg.depths, cfg.drop_path_rate if drop_path_rate is None else drop_path_rate)
        self.patch_embed = _patch_embed(cfg.patch_embed, in_chans, dims[0])
        self.layers = nn.ModuleList(
            Stage(
                nn.Sequential(*[VSSBlock(dims[i], cfg, rate) for rate in dpr[i]]),
                _downsample(cfg.downsample, dims[i], dims[i + 1]) if i < len(dims) - 1 else nn.Identity(),
            )
            for i in range(len(cfg.depths))
        )
        self.classifier = classifier_head(LayerNorm2d(dims[-1]), dims[-1], num_classes, named=True)
        self.apply(init_weights)  # official: trunc-normal(0.02) Linear/Linear2d, LayerNorm (1, 0)


# ----------------------------------------------------------------------------- official weights
_OLD_NAMES = (  # names of early released checkpoints -> current official names
    ("patch_embed.proj.", "patch_embed.0."),
    ("patch_embed.norm.", "patch_embed.2."),
    (".ln_1.", ".norm."),
    (".self_attention.", ".op."),
)


def official_key(key: str) -> str:
    """Official (or early-release) VMamba key -> fovea key (identical for current checkpoints)."""
    for old, new in _OLD_NAMES:
        key = key.replace(old, new) if old.startswith(".") else (new + key[len(old):] if key.startswith(old) else key)
    if key.startswith("norm."):
        key = "classifier.norm." + key[len("norm."):]
    if key.startswith("head."):
        key = "classifier.head." + key[len("head."):]
    return key


def _rename(key: str, value: torch.Tensor):
    return official_key(key), value


def _infer_variant(sd: dict[str, torch.Tensor]) -> str:
    depths = []
    for i in range(4):
        blocks = {k.split(".")[3] for k in sd if k.startswith(f"layers.{i}.blocks.")}
        depths.append(len(blocks))
    dim = next((v.shape[0] for k, v in sd.items() if official_key(k) == "layers.0.blocks.0.norm.weight"), None)
    a_logs = next((v for k, v in sd.items() if k.endswith("op.A_logs") or k.endswith("self_attention.A_logs")), None)
    d_state = a_logs.shape[1] if a_logs is not None else None
    in_proj = next((v for k, v in sd.items() if k.startswith("layers.0.blocks.0.") and "in_proj.weight" in k), None)
    ratio = (in_proj.shape[0] / in_proj.shape[1]) if in_proj is not None else None
    for name, cfg in VMAMBA_CONFIGS.items():
        gate = 2 if cfg.forward_type == "v0" else 1
        if (
            tuple(depths) == cfg.depths and dim == cfg.dims[0] and d_state == cfg.d_state
            and ratio == cfg.ssm_ratio * gate
        ):
            return name
    raise ConfigError(
        f"checkpoint matches no VMamba variant (depths {depths}, stage-1 width {dim}, d_state {d_state}, "
        f"in_proj ratio {ratio}). Fix: build the model yourself and pass it as model=..."
    )


register_official(OfficialFormat(
    family="vmamba", model_type=VMamba, rename=_rename,
    detect=lambda sd: any(k.endswith("A_logs") for k in sd) and not any(k.endswith("pos_embed.weight") for k in sd),
    infer_variant=_infer_variant, build=lambda name, n: VMamba(VMAMBA_CONFIGS[name], num_classes=n),
    head_key="classifier.head.weight",
))


# ----------------------------------------------------------------------------- timm registration
def _create(variant: str, pretrained: bool = False, **kwargs) -> VMamba:
    return build_staged(VMamba, variant, pretrained, VMAMBA_CONFIGS[variant], filter_official, **kwargs)


default_cfgs = generate_default_cfgs(
    {name: default_cfg("classifier.head", license="mit") for name in VMAMBA_CONFIGS}
)


@register_model
def vmamba_tiny_v0(pretrained: bool = False, **kwargs) -> VMamba:
    """Vanilla VMamba-T (v0): 22,893,448 params, d_state 16."""
    return _create("vmamba_tiny_v0", pretrained, **kwargs)


@register_model
def vmamba_small_v0(pretrained: bool = False, **kwargs) -> VMamba:
    """Vanilla VMamba-S (v0)."""
    return _create("vmamba_small_v0", pretrained, **kwargs)


@register_model
def vmamba_base_v0(pretrained: bool = False, **kwargs) -> VMamba:
    """Vanilla VMamba-B (v0)."""
    return _create("vmamba_base_v0", pretrained, **kwargs)


@register_model
def vmamba_tiny_s2l5(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T v2 (s2l5): 30,705,832 params."""
    return _create("vmamba_tiny_s2l5", pretrained, **kwargs)


@register_model
def vmamba_small_s2l15(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-S v2 (s2l15): 50.15M params."""
    return _create("vmamba_small_s2l15", pretrained, **kwargs)


@register_model
def vmamba_base_s2l15(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-B v2 (s2l15): 88.56M params."""
    return _create("vmamba_base_s2l15", pretrained, **kwargs)


@register_model
def vmamba_tiny_s1l8(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-T final (s1l8): 30,249,064 params."""
    return _create("vmamba_tiny_s1l8", pretrained, **kwargs)


@register_model
def vmamba_small_s1l20(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-S final (s1l20): 49.01M params."""
    return _create("vmamba_small_s1l20", pretrained, **kwargs)


@register_model
def vmamba_base_s1l20(pretrained: bool = False, **kwargs) -> VMamba:
    """VMamba-B final (s1l20): 86.61M params."""
    return _create("vmamba_base_s1l20", pretrained, **kwargs)
