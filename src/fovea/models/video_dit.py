"""A small latent video diffusion transformer (DiT, Peebles & Xie 2023) with CogVideoX-style full
spatio-temporal attention over text + video tokens, sized to train on a CPU.

- Input: latents (B, T, C, h, w) (per-frame autoencoder latents), diffusion time t in [0, 1], caption tokens
  (B, Lt) or their embeddings (B, Lt, D) (embeddings can be interpolated between prompts).
- Tokens: p x p latent patches of every frame (frame-major order: t, then row, then column) after Lt text
  tokens; one joint attention over all Lt + T * (h/p) * (w/p) tokens in every block, through
  F.scaled_dot_product_attention.
- Conditioning: adaLN-zero (shift, scale, gate per sub-layer, zero-initialised) on the sum of the timestep
  embedding and the pooled text embedding; the text tokens also take part in the attention (so video -> text
  attention maps exist for DiTCtrl's mask-guided KV sharing).
- Output: the v-prediction (B, T, C, h, w).
- Attention control: `forward(..., control=fn)` calls fn(layer, q, k, v) -> out (B, heads, N, d) instead of
  plain attention in every block; DiTCtrl's KV sharing plugs in there without touching the weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

AttentionControl = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class VideoDiTConfig:
    """latent (frames, channels, size) the model sees; patch: p; dim/depth/heads of the transformer;
    vocab_size/text_len of the caption tokens (token 0 = padding = the empty prompt)."""

    frames: int = 8
    latent_channels: int = 4
    latent_size: int = 8
    patch: int = 2
    dim: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    vocab_size: int = 15
    text_len: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(frames, rows, cols) of video tokens."""
        n = self.latent_size // self.patch
        return self.frames, n, n


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) diffusion times in [0, 1] -> (B, dim) sinusoidal features of 1000 t."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) * (1 + scale) + shift, shift/scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTAttention(nn.Module):
    """Multi-head self-attention with per-head RMS-normalised queries/keys; `control` may replace the
    attention itself (q, k, v (B, heads, N, d) -> (B, heads, N, d))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads)
        self.k_norm = nn.RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, layer: int, control: AttentionControl | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        out = control(layer, q, k, v) if control is not None else F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-zero: x + gate * f(modulate(norm(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = DiTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, layer: int,
                control: AttentionControl | None = None) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1), layer, control)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class VideoDiT(nn.Module):
    """forward(latents (B, T, C, h, w), t (B,), tokens (B, Lt) | text_emb (B, Lt, D)) -> v (B, T, C, h, w)."""

    def __init__(self, config: VideoDiTConfig = VideoDiTConfig()):
        super().__init__()
        cfg = self.config = config
        if cfg.latent_size % cfg.patch or cfg.dim % cfg.heads:
            raise ValueError(f"latent_size {cfg.latent_size} must divide by patch {cfg.patch} and dim {cfg.dim} "
                             f"by heads {cfg.heads}")
        frames, rows, cols = cfg.grid
        patch_dim = cfg.latent_channels * cfg.patch ** 2
        self.patch_embed = nn.Linear(patch_dim, cfg.dim)
        self.pos_time = nn.Parameter(torch.randn(frames, cfg.dim) * 0.02)
        self.pos_space = nn.Parameter(torch.randn(rows * cols, cfg.dim) * 0.02)
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.pos_text = nn.Parameter(torch.randn(cfg.text_len, cfg.dim) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.text_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.head = nn.Linear(cfg.dim, patch_dim)
        for layer in (self.ada_out, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def num_text_tokens(self) -> int:
        return self.config.text_len

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, Lt) int64 -> (B, Lt, D) token embeddings (before positions); interpolate these between prompts."""
        if tokens.shape[-1] != self.config.text_len:
            raise ValueError(f"captions must have {self.config.text_len} tokens, got {tokens.shape[-1]}")
        return self.token_embed(tokens)

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> (B, T * h/p * w/p, C p p) in frame-major, row-major order."""
        b, t, c, h, w = latents.shape
        p = self.config.patch
        x = latents.reshape(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of patchify: (B, T * rows * cols, C p p) -> (B, T, C, h, w)."""
        cfg = self.config
        frames, rows, cols = cfg.grid
        b, p, c = x.shape[0], cfg.patch, cfg.latent_channels
        x = x.reshape(b, frames, rows, cols, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, frames, c, rows * p, cols * p)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor | None = None,
                text_emb: torch.Tensor | None = None, control: AttentionControl | None = None) -> torch.Tensor:
        cfg = self.config
        if tuple(latents.shape[1:]) != (cfg.frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size):
            raise ValueError(f"latents {tuple(latents.shape)} do not fit (B, {cfg.frames}, {cfg.latent_channels}, "
                             f"{cfg.latent_size}, {cfg.latent_size})")
        if text_emb is None:
            if tokens is None:
                raise ValueError("pass caption tokens or text embeddings")
            text_emb = self.embed_text(tokens)
        frames, rows, cols = cfg.grid
        video = self.patch_embed(self.patchify(latents))
        pos = (self.pos_time[:, None, :] + self.pos_space[None, :, :]).reshape(frames * rows * cols, cfg.dim)
        x = torch.cat([text_emb + self.pos_text, video + pos], dim=1)
        c = self.time_mlp(timestep_embedding(t, cfg.dim).to(latents.dtype)) + self.text_mlp(text_emb.mean(dim=1))
        for i, block in enumerate(self.blocks):
            x = block(x, c, i, control)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        out = self.head(modulate(self.norm_out(x[:, cfg.text_len:]), shift, scale))
        return self.unpatchify(out)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
