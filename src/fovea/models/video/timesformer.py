"""TimeSformer with divided space-time attention (Bertasius et al., ICML 2021), written from the
paper (the official code is CC-BY-NC) in MMAction2's `timesformer_divST` layout.

ViT-B/16: patch embedding per frame, spatial positional embedding (with CLS), then a temporal
embedding per frame. Each block: temporal attention over each patch's T tokens (token order
patch-major, "(p t)") -> zero-initialised `temporal_fc` -> residual; spatial attention within each
frame with the CLS token copied to every frame and averaged back; MLP. Attention runs through
F.scaled_dot_product_attention. Input (B, 3, 8, 224, 224) (mean/std 127.5) -> (B, K) from CLS.
121.57 M parameters with 400 classes, 195.83 GMACs at 8x224^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fovea.models.video._registry import register_video_model


class Attention(nn.Module):
    """Multi-head self-attention (qkv with bias, output projection). (N, L, D) -> (N, L, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, L, d = x.shape
        q, k, v = self.qkv(x).view(n, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(n, L, d))


class DividedSTBlock(nn.Module):
    """Temporal attention, spatial attention, MLP; x (B, 1 + P*T, D) in patch-major order."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_t = nn.LayerNorm(dim, eps=1e-6)
        self.attn_t = Attention(dim, heads)
        self.temporal_fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.norm_s = nn.LayerNorm(dim, eps=1e-6)
        self.attn_s = Attention(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        b, n, d = x.shape
        p = (n - 1) // t
        cls, tok = x[:, :1], x[:, 1:]
        res = self.attn_t(self.norm_t(tok.reshape(b * p, t, d))).reshape(b, p * t, d)
        tok = tok + self.temporal_fc(res)
        frames = tok.view(b, p, t, d).transpose(1, 2).reshape(b * t, p, d)            # (B*T, P, D)
        y = self.attn_s(self.norm_s(torch.cat([cls.repeat_interleave(t, dim=0), frames], dim=1)))
        cls_res = y[:, 0].view(b, t, d).mean(dim=1, keepdim=True)
        tok_res = y[:, 1:].reshape(b, t, p, d).transpose(1, 2).reshape(b, p * t, d)
        x = torch.cat([cls, tok], dim=1) + torch.cat([cls_res, tok_res], dim=1)
        return x + self.mlp(self.norm_mlp(x))


class TimeSformer(nn.Module):
    """forward (B, 3, T, H, W) -> (B, K); `forward_features` -> normalised tokens (B, 1 + P*T, D)."""

    def __init__(self, num_classes: int = 400, *, num_frames: int = 8, img_size: int = 224, patch_size: int = 16,
                 dim: int = 768, depth: int = 12, heads: int = 12, in_channels: int = 3, dropout: float = 0.0,
                 features_only: bool = False):
        super().__init__()
        self.patch_size, self.num_features, self.features_only = patch_size, dim, features_only
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        n_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        self.time_embed = nn.Parameter(torch.zeros(1, num_frames, dim))
        for prm in (self.cls_token, self.pos_embed, self.time_embed):
            nn.init.trunc_normal_(prm, std=0.02)
        self.blocks = nn.ModuleList(DividedSTBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = None if features_only else nn.Linear(dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tok = self.patch_embed(x.transpose(1, 2).reshape(b * t, c, h, w)).flatten(2).transpose(1, 2)  # (B*T, P, D)
        p, d = tok.shape[1], tok.shape[2]
        tok = tok + self.pos_embed[:, 1:]
        tok = tok.view(b, t, p, d).transpose(1, 2) + self.time_embed[:, :t].unsqueeze(1)   # (B, P, T, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, tok.reshape(b, p * t, d)], dim=1)
        for blk in self.blocks:
            x = blk(x, t)
        return self.norm(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(feats[:, 0]))

    def forward(self, x: torch.Tensor):
        feats = self.forward_features(x)
        return feats if self.features_only else self.forward_head(feats)


@register_video_model
def timesformer_divst(*, num_classes: int = 400, **kwargs) -> TimeSformer:
    """TimeSformer-divST ViT-B/16 at 8x224^2, MMAction2 `timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb`."""
    return TimeSformer(num_classes, **kwargs)
