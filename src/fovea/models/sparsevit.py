"""SparseViT (Su et al., AAAI 2025, arXiv 2412.14598): image-manipulation localisation with sparse
self-attention on a UniFormer-B layout and a learnable multi-scale feature fusion (LFF).

Re-implemented from the paper and the semantics in ../shared/notes/video_light_backbones.md (the
authors' code has no licence); nothing copied. Input (B, 3, H, W), H and W multiples of 128 (the
paper fixes 512 x 512) -> manipulation logits (B, 1, H, W).

- Stem and stages: UniFormer-B: depths (5, 8, 20, 7), dims (64, 128, 320, 512), patch embeddings
  4 / 2 / 2 / 2 (conv + LayerNorm over channels), head dim 64, MLP ratio 4.
- Stages 1-2, `ConvBlock`: x += DW3x3(x); x += 1x1(DW5x5(1x1(BN(x)))); x += CMlp(BN(x)).
- Stages 3-4, `SparseBlock`: x += g1 * SparseAttention(LN(x)); x += g2 * MixFFN(LN(x)) with layer
  scale g (init 1e-6). Sparse attention with sparse size S splits the (H, W) token grid into S^2
  groups, group (i, j) = tokens (a*S + i, b*S + j): a stride-S dilated grid, each group attending
  within itself (plain multi-head attention through F.scaled_dot_product_attention); S = 1 is
  global attention. The paper's schedule: stage 3 S = 8, 4, 2, 1 for blocks 0-4, 5-9, 10-14,
  15-19; stage 4 S = 2 for blocks 0-3, then 1. Each SparseBlock also holds UniFormer's DW3x3
  `pos_embed`, which the reference defines but never applies (kept: it is in the parameter count).
- LFF over 6 maps: stage 3 after blocks 5, 10, 15 and its LayerNorm'd output (each through its
  own 1x1 conv 320 -> 512), stage 4 after block 4 and its LayerNorm'd output (upsampled to the
  stage-3 grid); fused = sum_i g_i * map_i (per-channel g_i, init 1e-6); LayerNorm; 1x1 conv to one
  channel; bilinear to the input size. Train with BCE-with-logits against the forgery mask.

Size at 512 x 512: 50.35 M parameters, 46.0 GMACs (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from fovea.errors import ConfigError

__all__ = ["SparseViT", "SparseViTConfig", "dilated_groups", "sparsevit_uniformer_b", "undo_dilated_groups"]


@dataclass
class SparseViTConfig:
    depths: tuple[int, ...] = (5, 8, 20, 7)
    dims: tuple[int, ...] = (64, 128, 320, 512)
    head_dim: int = 64
    mlp_ratio: float = 4.0
    stage3_sparse: tuple[int, ...] = field(default_factory=lambda: (8,) * 5 + (4,) * 5 + (2,) * 5 + (1,) * 5)
    stage4_sparse: tuple[int, ...] = (2, 2, 2, 2, 1, 1, 1)
    stage3_taps: tuple[int, ...] = (5, 10, 15)  # LFF inputs: stage-3 output after this many blocks
    stage4_taps: tuple[int, ...] = (4,)
    drop_path_rate: float = 0.2
    layer_scale: float = 1e-6
    input_multiple: int = 128


def dilated_groups(x: torch.Tensor, s: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * s^2, H/s * W/s, C); group (i, j) = tokens (a*s + i, b*s + j), row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // s, s, w // s, s, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * s * s, (h // s) * (w // s), c)


def undo_dilated_groups(x: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `dilated_groups`: (B * s^2, H/s * W/s, C) -> (B, H, W, C)."""
    c = x.shape[-1]
    x = x.reshape(-1, s, s, h // s, w // s, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, h, w, c)


class PatchEmbed(nn.Module):
    """Conv k = stride = patch, then LayerNorm over channels: (B, C_in, H, W) -> (B, C, H/p, W/p)."""

    def __init__(self, c_in: int, c_out: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, patch, stride=patch)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvBlock(nn.Module):
    """UniFormer's local block (stages 1-2) on (B, C, H, W)."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SparseAttention(nn.Module):
    """Multi-head attention within the s^2 dilated groups of a (B, H, W, C) token grid."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, s: int) -> torch.Tensor:
        b, h, w, c = x.shape
        t = dilated_groups(x, s) if s > 1 else x.reshape(b, h * w, c)
        g, n, _ = t.shape
        q, k, v = self.qkv(t).reshape(g, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(g, n, c)  # scale d^-0.5
        y = self.proj(y)
        return undo_dilated_groups(y, s, h, w) if s > 1 else y.reshape(b, h, w, c)


class MixFFN(nn.Module):
    """fc1 -> DW3x3 -> GELU -> fc2 on a (B, H, W, C) grid."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(x))


class SparseBlock(nn.Module):
    """SparseViT block (stages 3-4) on (B, H, W, C) with sparse size `sparse_size`."""

    def __init__(self, dim: int, heads: int, sparse_size: int, mlp_ratio: float, drop_path: float,
                 layer_scale: float):
        super().__init__()
        self.sparse_size = sparse_size
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # defined, never applied (as the reference)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SparseAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma_2 = nn.Parameter(torch.full((dim,), layer_scale))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), self.sparse_size))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class LearnableFeatureFusion(nn.Module):
    """LFF: (stage-3 maps (B, 32x32 grid, C3), stage-4 maps (B, 16x16 grid, C4)) -> logits (B, 1, h3, w3)."""

    def __init__(self, c3: int, c4: int, n3: int, n4: int, init: float = 1e-6):
        super().__init__()
        self.proj3 = nn.ModuleList(nn.Conv2d(c3, c4, 1) for _ in range(n3))
        self.gammas = nn.Parameter(torch.full((n3 + n4, c4), init))
        self.norm = nn.LayerNorm(c4)
        self.head = nn.Conv2d(c4, 1, 1)

    def forward(self, maps3: list[torch.Tensor], maps4: list[torch.Tensor]) -> torch.Tensor:
        size = maps3[0].shape[-2:]
        maps = [proj(m) for proj, m in zip(self.proj3, maps3)]
        maps += [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps4]
        fused = sum(g[None, :, None, None] * m for g, m in zip(self.gammas, maps))
        fused = self.norm(fused.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(fused)


class SparseViT(nn.Module):
    """(B, 3, H, W) normalised images, H and W multiples of 128 -> manipulation logits (B, 1, H, W)."""

    def __init__(self, config: SparseViTConfig | None = None):
        super().__init__()
        cfg = self.config = config or SparseViTConfig()
        if len(cfg.stage3_sparse) != cfg.depths[2] or len(cfg.stage4_sparse) != cfg.depths[3]:
            raise ConfigError(f"SparseViT: sparse schedules {cfg.stage3_sparse} / {cfg.stage4_sparse} must have "
                              f"one entry per block of stages 3 / 4 (depths {cfg.depths[2:]})")
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace(0, rate, total)
        d = cfg.dims
        self.patch_embed = nn.ModuleList([PatchEmbed(3, d[0], 4), PatchEmbed(d[0], d[1], 2),
                                          PatchEmbed(d[1], d[2], 2), PatchEmbed(d[2], d[3], 2)])
        start = [sum(cfg.depths[:i]) for i in range(4)]
        self.stage1 = nn.Sequential(*[ConvBlock(d[0], cfg.mlp_ratio, rates[start[0] + j]) for j in range(cfg.depths[0])])
        self.stage2 = nn.Sequential(*[ConvBlock(d[1], cfg.mlp_ratio, rates[start[1] + j]) for j in range(cfg.depths[1])])
        self.stage3 = nn.ModuleList(SparseBlock(d[2], d[2] // cfg.head_dim, s, cfg.mlp_ratio, rates[start[2] + j],
                                                cfg.layer_scale) for j, s in enumerate(cfg.stage3_sparse))
        self.stage4 = nn.ModuleList(SparseBlock(d[3], d[3] // cfg.head_dim, s, cfg.mlp_ratio, rates[start[3] + j],
                                                cfg.layer_scale) for j, s in enumerate(cfg.stage4_sparse))
        self.norm3 = nn.LayerNorm(d[2])
        self.norm4 = nn.LayerNorm(d[3])
        self.fusion = LearnableFeatureFusion(d[2], d[3], len(cfg.stage3_taps) + 1, len(cfg.stage4_taps) + 1)

    @staticmethod
    def _run(blocks: nn.ModuleList, x: torch.Tensor, taps, norm: nn.LayerNorm):
        """Blocks on (B, H, W, C) -> (last output (B, H, W, C), LFF maps (B, C, H, W): taps + normed output)."""
        out = []
        for i, block in enumerate(blocks):
            x = block(x)
            if i + 1 in taps:
                out.append(x.permute(0, 3, 1, 2))
        return x, out + [norm(x).permute(0, 3, 1, 2)]

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(B, 3, H, W) -> (stage-3 LFF maps (B, C3, H/16, W/16), stage-4 LFF maps (B, C4, H/32, W/32))."""
        h, w = x.shape[-2:]
        m = self.config.input_multiple
        if h % m or w % m:
            raise ConfigError(f"SparseViT needs H and W that are multiples of {m} (dilated groups of up to 8 in "
                              f"stage 3), got {h} x {w}; resize the input (the paper uses 512 x 512)")
        x = self.stage1(self.patch_embed[0](x))
        x = self.stage2(self.patch_embed[1](x))
        x = self.patch_embed[2](x).permute(0, 2, 3, 1)
        x, maps3 = self._run(self.stage3, x, self.config.stage3_taps, self.norm3)
        x = self.patch_embed[3](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        _, maps4 = self._run(self.stage4, x, self.config.stage4_taps, self.norm4)
        return maps3, maps4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps3, maps4 = self.forward_features(x)
        logits = self.fusion(maps3, maps4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def sparsevit_uniformer_b(**overrides) -> SparseViT:
    """The paper's model (UniFormer-B layout, random init: no licensed weights exist)."""
    return SparseViT(SparseViTConfig(**overrides))
