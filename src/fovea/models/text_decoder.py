"""A small causal transformer text decoder with a KV cache, explicit attention masks and optional
cross-attention to image tokens: the language half of fovea's captioner, and the base model that
Medusa decoding (`fovea.nn.medusa`) speeds up.

Every attention goes through `F.scaled_dot_product_attention` with a boolean mask (True = may
attend), so the same forward serves training (causal mask), cached decoding (one new token) and
Medusa's tree step (a tree mask over the candidates beside the whole cached prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TextDecoderConfig:
    """vocab_size: tokens (with the specials); dim/depth/heads: transformer size; max_len: positions;
    memory_dim: width of the image tokens cross-attended to (None: a text-only language model)."""

    vocab_size: int = 256
    dim: int = 128
    depth: int = 2
    heads: int = 4
    max_len: int = 64
    mlp_ratio: float = 4.0
    memory_dim: int | None = None


class KVCache:
    """Keys and values of every layer for the tokens decoded so far: lists of (B, heads, S, head_dim)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values

    @property
    def length(self) -> int:
        return 0 if not self.keys else int(self.keys[0].shape[2])

    def select(self, index: torch.Tensor) -> KVCache:
        """A cache holding only the positions `index` (S',) of this one, in that order (Medusa keeps the
        accepted path of its tree this way)."""
        return KVCache([k.index_select(2, index) for k in self.keys], [v.index_select(2, index) for v in self.values])


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, kv_input, mask=None, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, T, D) queries; kv_input (B, S, D) new keys/values, appended to `past` (B, h, S0, d) when
        given; mask (T, S0 + S) bool. Returns the output (B, T, D) and the full (keys, values)."""
        q = self.split(self.q(x))
        k, v = (self.split(t) for t in self.kv(kv_input).chunk(2, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, optional cross-attention to image tokens, MLP."""

    def __init__(self, cfg: TextDecoderConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = _Attention(cfg.dim, cfg.heads)
        self.cross = None
        if cfg.memory_dim is not None:
            self.norm_cross = nn.LayerNorm(cfg.dim)
            self.cross = _Attention(cfg.dim, cfg.heads, kv_dim=cfg.memory_dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))

    def forward(self, x, mask, past=None, memory=None):
        h = self.norm1(x)
        a, kv = self.attn(h, h, mask, past)
        x = x + a
        if self.cross is not None and memory is not None:  # no memory: the unimodal (text-only) mode
            x = x + self.cross(self.norm_cross(x), memory)[0]
        return x + self.mlp(self.norm2(x)), kv


class TextDecoder(nn.Module):
    """Token ids (B, T) -> hidden states (B, T, dim); `logits(hidden)` -> (B, T, vocab) (tied embedding)."""

    def __init__(self, cfg: TextDecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, ids: torch.Tensor, *, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, memory: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """ids (B, T) new tokens; positions (T,) or (B, T) (default: after the cache); mask (T, S) bool over the
        cached plus new tokens (default: causal); cache: earlier tokens' keys/values; memory (B, M, C) image
        tokens. Returns hidden (B, T, dim) and the cache extended by the new tokens."""
        t = ids.shape[1]
        past_len = 0 if cache is None else cache.length
        if positions is None:
            last = past_len + t - 1
            positions = torch.arange(past_len, past_len + t, device=ids.device)
        elif torch.jit.is_tracing() or torch.compiler.is_compiling():
            last = -1  # explicit positions only come from eager decoding (Medusa); exports use the default
        else:
            last = int(positions.max())
        if last >= self.cfg.max_len:
            raise ValueError(f"position {last} >= max_len {self.cfg.max_len}: the decoder was built for at most "
                             f"{self.cfg.max_len} tokens; build it with a larger max_len")
        if mask is None:
            mask = causal_mask(t, past_len, ids.device)
        x = self.embed(ids) + self.pos(positions)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = None if cache is None else (cache.keys[i], cache.values[i])
            x, (k, v) = layer(x, mask, past, memory)
            keys.append(k)
            values.append(v)
        return self.norm(x), KVCache(keys, values)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embed.weight.T


def causal_mask(new: int, past: int = 0, device=None) -> torch.Tensor:
    """(new, past + new) bool: token i of the new ones sees every cached token and new tokens 0..i."""
    rows = torch.arange(new, device=device)[:, None]
    cols = torch.arange(past + new, device=device)[None, :]
    return cols <= rows + past


@torch.no_grad()
def greedy_decode(model: TextDecoder, prompt: torch.Tensor, max_new_tokens: int, *, eos: int | None = None,
                  memory: torch.Tensor | None = None) -> torch.Tensor:
    """Plain greedy decoding with the KV cache, one forward per token: prompt (T,) -> generated ids (N,).
    The reference Medusa decoding must reproduce exactly under greedy acceptance."""
    hidden, cache = model(prompt[None], memory=memory)
    out = []
    for _ in range(max_new_tokens):
        token = model.logits(hidden[:, -1]).argmax(-1)
        out.append(int(token))
        if eos is not None and out[-1] == eos:
            break
        hidden, cache = model(token[None], cache=cache, memory=memory)
    return torch.tensor(out, dtype=torch.long)
