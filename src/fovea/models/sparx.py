"""SparX-Mamba (Lou, Fu, Yu, AAAI 2025): VMamba-style blocks with sparse cross-layer connections.

Per stage, "ganglion" layers sit every S layers counted back from the stage's last block (from
`dense_start` on). A ganglion layer aggregates, through DMCA, the normal layers since the previous
ganglion layer (the stage input seeds the first aggregation) and the last M ganglion outputs
(sliding window). Every block has a depthwise 3x3 position encoding, a ConvFFN and (stages 3-4)
layer scale on the identity path. Keys equal the official `models/sparx_mamba.py`, except that
`x_proj_weight` is stored as (K, R+2N, D) instead of (K*(R+2N), D, 1); `load_official` reshapes.

SparX-Swin-T (`sparx_swin_t`) is built in `fovea.models.sparx_swin` from the paper's rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from fovea.errors import ConfigError
from fovea.nn.dmca import build_dmca, dmca_forward
from fovea.nn.layers import ConvFFN, GroupNorm1, LayerScale2d
from fovea.nn.ss2d import SS2DCore

__all__ = ["SPARX_CONFIGS", "SparXConfig", "SparXMamba", "ganglion_indices", "load_official", "sparse_route"]


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


def sparse_route(blocks, ganglion: list[int], window: int, x: torch.Tensor) -> torch.Tensor:
    """Run a stage's blocks with SparX routing; ganglion blocks get cat(normal since last, last M ganglions)."""
    inner, cross = [x], []  # normal outputs since the last ganglion (seeded by the stage input)
    for j, block in enumerate(blocks):
        if j in ganglion:
            x = block(x, torch.cat(inner + cross, dim=1))
            cross = (cross + [x])[-window:]
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
        from timm.layers import DropPath

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


class SparXStage(nn.Module):
    """Blocks with sparse cross-layer routing; `downsample` is applied by the model afterwards."""

    def __init__(self, dim: int, cfg: SparXConfig, stage: int, dpr: list[float], downsample: nn.Module):
        super().__init__()
        depth = cfg.depths[stage]
        self.window = cfg.max_dense_depth[stage]
        chs = ganglion_in_channels(depth, cfg.dense_step[stage], cfg.dense_start[stage], self.window, dim)
        self.ganglion = sorted(chs)
        self.blocks = nn.ModuleList([SparXBlock(dim, cfg, stage, dpr[j], chs.get(j)) for j in range(depth)])
        self.downsample = downsample

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_route(self.blocks, self.ganglion, self.window, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


def _stem(version: str, in_chans: int, dim: int) -> nn.Sequential:
    half = dim // 2
    layers = [nn.Conv2d(in_chans, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.GELU()]
    if version == "v2":
        layers += [nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.BatchNorm2d(half), nn.GELU()]
    elif version != "v1":
        raise ConfigError(f"SparX stem {version!r} unknown. Fix: use 'v1' or 'v2'.")
    layers += [nn.Conv2d(half, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim)]
    return nn.Sequential(*layers)


class SparXMamba(nn.Module):
    """SparX-Mamba classifier/backbone on (B, 3, H, W), H and W divisible by 32.

    timm API: `forward_features`, `forward_head`, `reset_classifier`, `forward_intermediates`
    (four stages at strides 4, 8, 16, 32; before each downsample).
    """

    def __init__(
        self,
        cfg: SparXConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        global_pool: str = "avg",
    ):
        super().__init__()
        if len(cfg.depths) != 4:
            raise ConfigError(f"SparX needs 4 stages, got depths {cfg.depths}. Fix: pass four depths.")
        self.cfg = cfg
        dims = list(cfg.dims)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = dims[-1]
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        total = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
        dpr = torch.linspace(0, total, sum(cfg.depths), device="cpu").tolist()
        self.patch_embed = _stem(cfg.stem, in_chans, dims[0])
        self.layers = nn.ModuleList()
        self.feature_info = []
        start = 0
        for i, depth in enumerate(cfg.depths):
            down = (
                nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, 2, 1, bias=False), nn.BatchNorm2d(dims[i + 1]))
                if i < 3 else nn.Identity()
            )
            self.layers.append(SparXStage(dims[i], cfg, i, dpr[start:start + depth], down))
            start += depth
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"layers.{i}"))
        self.classifier = nn.Sequential(
            GroupNorm1(dims[-1]), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
            nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity(),
        )
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"A_logs", "Ds"}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier[3]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.classifier[3] = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[0](x)
        if self.global_pool:
            x = x.mean(dim=(2, 3))
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier[3](x)

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
            x = layer.forward_blocks(x)
            if i in take:
                feats.append(self.classifier[0](x) if norm and i == last else x)
            if stop_early and i >= max_index:
                break
            x = layer.downsample(x)
        return feats if intermediates_only else (x, feats)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        from timm.models._features import feature_take_indices

        take, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm or max_index < 3:
            self.classifier[0] = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


def _init_weights(m: nn.Module) -> None:
    """Official init: trunc-normal(0.02) on Linear and every Conv2d, zero biases, norms (1, 0)."""
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


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


def load_official(path_or_state_dict, model: SparXMamba | None = None) -> SparXMamba:
    """Load an official SparX-Mamba checkpoint (file or state dict) into `model` or a new model.

    Raises CheckpointError listing keys that do not map one-to-one.
    """
    from fovea.models._checkpoint import load_mapped, read_checkpoint

    sd = read_checkpoint(path_or_state_dict)
    if model is None:
        head = sd.get("classifier.3.weight")
        model = SparXMamba(SPARX_CONFIGS[_infer_variant(sd)], num_classes=head.shape[0] if head is not None else 0)
    source = path_or_state_dict if not isinstance(path_or_state_dict, dict) else "official SparX state dict"
    return load_mapped(model.eval(), sd, _rename, source=str(source))


def checkpoint_filter_fn(state_dict: dict, model: SparXMamba) -> dict:
    """timm `pretrained_filter_fn`: accept official SparX checkpoints through `timm.create_model`."""
    from fovea.models._checkpoint import read_checkpoint

    return dict(_rename(k, v) for k, v in read_checkpoint(state_dict).items())


# ----------------------------------------------------------------------------- timm registration
def _cfg(**kwargs):
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.0", "classifier": "classifier.3", "license": "apache-2.0", **kwargs,
    }


def _create(variant: str, pretrained: bool = False, **kwargs) -> SparXMamba:
    from timm.models import build_model_with_cfg

    cfg = kwargs.pop("cfg", None) or SPARX_CONFIGS[variant]  # cfg=... overrides the architecture (tests, ablations)
    return build_model_with_cfg(
        SparXMamba, variant, pretrained, cfg=cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({name: _cfg(crop_pct=c.crop_pct) for name, c in SPARX_CONFIGS.items()})


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
