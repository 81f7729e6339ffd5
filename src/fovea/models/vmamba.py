"""VMamba (Liu et al., NeurIPS 2024): visual state-space backbone with SS2D four-way scans.

Families, with the official configurations (MzeroMiko/VMamba `classification/configs/vssm`):
vanilla v0 (T/S/B: d_state 16, gated SS2D, no MLP, Swin patch merging), v2 `s2lX` (d_state 1,
ssm_ratio 2, `v05_noz`) and the final v2v `s1lX` (d_state 1, ssm_ratio 1, `v05_noz`).
Everything runs channels-first (B, C, H, W); a channels-last LayerNorm over C is the same map,
so one implementation covers the `ln` and `ln2d` variants. State-dict keys equal the official
ones (Linear layout for 1x1 projections), so `load_official` is a near-identity mapping.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from timm.models import generate_default_cfgs, register_model

from fovea.errors import ConfigError
from fovea.nn.layers import LayerNorm2d, Linear2d, Mlp2d, PatchMerging2d
from fovea.nn.ss2d import SS2DCore

__all__ = ["SS2D", "VMAMBA_CONFIGS", "VMamba", "VMambaConfig", "VSSBlock", "load_official"]


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
    extra: dict = field(default_factory=dict)


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
    """x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x))) when mlp_ratio > 0."""

    def __init__(self, dim: int, cfg: VMambaConfig, drop_path: float = 0.0):
        super().__init__()
        from timm.layers import DropPath

        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, cfg.d_state, cfg.ssm_ratio, cfg.dt_rank, cfg.d_conv, cfg.conv_bias, cfg.forward_type)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp_branch = cfg.mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = LayerNorm2d(dim)
            self.mlp = Mlp2d(dim, int(dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class VMambaStage(nn.Module):
    """`blocks` then `downsample` (Identity after the last stage); official key layout."""

    def __init__(self, blocks: nn.Sequential, downsample: nn.Module):
        super().__init__()
        self.blocks = blocks
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.blocks(x))


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


class VMamba(nn.Module):
    """VMamba classifier/backbone on (B, 3, H, W) with H, W divisible by 32.

    timm API: `forward_features` -> (B, C4, H/32, W/32), `forward_head`, `reset_classifier`,
    `forward_intermediates` (four stages at strides 4, 8, 16, 32) for `features_only=True`.
    """

    def __init__(
        self,
        cfg: VMambaConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.cfg = cfg
        dims = list(cfg.dims)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        dpr_total = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
        dpr = torch.linspace(0, dpr_total, sum(cfg.depths), device="cpu").tolist()
        self.patch_embed = _patch_embed(cfg.patch_embed, in_chans, dims[0])
        self.layers = nn.ModuleList()
        self.feature_info = []
        start = 0
        for i, depth in enumerate(cfg.depths):
            blocks = nn.Sequential(*[VSSBlock(dims[i], cfg, dpr[start + j]) for j in range(depth)])
            start += depth
            down = _downsample(cfg.downsample, dims[i], dims[i + 1]) if i < len(dims) - 1 else nn.Identity()
            self.layers.append(VMambaStage(blocks, down))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"layers.{i}"))
        self.classifier = nn.Sequential(OrderedDict(
            norm=LayerNorm2d(dims[-1]),
            avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            head=nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity(),
        ))
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"A_logs", "Ds"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.classifier.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier.norm(x)
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self, x, indices=None, norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs before each downsample; `norm` applies the head norm to the last stage."""
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        feats = []
        x = self.patch_embed(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.blocks(x)
            if i in take:
                feats.append(self.classifier.norm(x) if norm and i == last else x)
            if stop_early and i >= max_index:
                break
            x = layer.downsample(x)
        return feats if intermediates_only else (x, feats)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.classifier.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


def _init_weights(m: nn.Module) -> None:
    """Official `_init_weights`: trunc-normal(0.02) Linear/Linear2d, zero biases, LN = (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


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


def load_official(path_or_state_dict, model: VMamba | None = None) -> VMamba:
    """Load an official VMamba checkpoint (file or state dict) into `model` or a new model.

    Without `model`, the variant is inferred from the checkpoint's depths, width, d_state and
    SSM ratio. Raises CheckpointError listing any key that does not map one-to-one.
    """
    from fovea.models._checkpoint import load_mapped, read_checkpoint

    sd = read_checkpoint(path_or_state_dict)
    if model is None:
        name = _infer_variant(sd)
        head = next((v for k, v in sd.items() if official_key(k) == "classifier.head.weight"), None)
        model = VMamba(VMAMBA_CONFIGS[name], num_classes=head.shape[0] if head is not None else 0)
    source = path_or_state_dict if not isinstance(path_or_state_dict, dict) else "official VMamba state dict"
    return load_mapped(model.eval(), sd, _rename, source=str(source))


def checkpoint_filter_fn(state_dict: dict, model: VMamba) -> dict:
    """timm `pretrained_filter_fn`: accept official checkpoints through `timm.create_model`."""
    from fovea.models._checkpoint import read_checkpoint

    out = {}
    target = model.state_dict()
    for k, v in read_checkpoint(state_dict).items():
        k = official_key(k)
        if k in target and v.dim() != target[k].dim() and v.numel() == target[k].numel():
            v = v.reshape(target[k].shape)
        out[k] = v
    return out


# ----------------------------------------------------------------------------- timm registration
def _cfg(**kwargs):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.0", "classifier": "classifier.head", "license": "mit", **kwargs,
    }


def _create(variant: str, pretrained: bool = False, **kwargs) -> VMamba:
    from timm.models import build_model_with_cfg

    cfg = kwargs.pop("cfg", None) or VMAMBA_CONFIGS[variant]  # cfg=... overrides the architecture (tests, ablations)
    return build_model_with_cfg(
        VMamba, variant, pretrained, cfg=cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({name: _cfg() for name in VMAMBA_CONFIGS})


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
