"""A small causal transformer text decoder with a KV cache, explicit attention masks and optional
cross-attention to image tokens: the language half of fovea's captioner, and the base model that
Medusa decoding (`fovea.nn.medusa`) speeds up.

Every attention goes through `F.scaled_dot_product_attention` with a mask (bool True = may attend, or
additive float), so the same forward serves training (causal mask), cached decoding (one new token, no
mask) and Medusa's tree step (a tree mask over the candidates beside the whole cached prefix). Decoding
writes keys/values into a preallocated cache (no concatenation per step) and computes the image tokens'
cross-attention keys/values once per image (`TextDecoder.new_cache`).
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
    """Preallocated keys/values for incremental decoding, written in place.

    buffer (depth, 2, B, heads, capacity, head_dim): layer l's keys are buffer[l, 0, ..., :length, :], its values
    buffer[l, 1, ..., :length, :]. A forward with this cache writes its T new tokens at positions length ..
    length + T - 1 and advances `length`; `keep` compacts a chosen subset of the newest positions (Medusa's
    accepted path) without any concatenation. `memory_kv`: the cross-attention keys/values of the image tokens,
    computed once per image by `TextDecoder.new_cache` and reused by every step."""

    def __init__(self, buffer: torch.Tensor, memory_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.buffer, self.memory_kv, self.length = buffer, memory_kv, 0

    @property
    def capacity(self) -> int:
        return int(self.buffer.shape[4])

    def write(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """kv (2, B, heads, T, head_dim) of the new tokens -> (keys, values) (B, heads, length + T, head_dim)
        views of the whole cache including them (`length` is advanced by the caller, once per forward)."""
        end = self.length + kv.shape[3]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions needed, capacity {self.capacity}; build the cache "
                             "with a larger capacity (TextDecoder.new_cache(capacity=...))")
        self.buffer[layer, :, :, :, self.length:end] = kv
        return self.buffer[layer, 0, :, :, :end], self.buffer[layer, 1, :, :, :end]

    def keep(self, start: int, index: torch.Tensor) -> None:
        """Keep positions start + index (K,) (increasing, index[j] >= j) as positions start .. start + K - 1 and
        drop everything after them: one gather and one copy for all layers."""
        n = int(index.shape[0])
        self.buffer[:, :, :, :, start:start + n] = self.buffer.index_select(4, index + start)
        self.length = start + n


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

    def keys_values(self, kv_input: torch.Tensor) -> torch.Tensor:
        """(B, S, kv_dim) -> (2, B, heads, S, head_dim) keys and values."""
        b, s, _ = kv_input.shape
        return self.kv(kv_input).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(self, x, kv_input=None, mask=None, kv: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (B, T, D) queries; keys/values either from kv_input (B, S, D) or given as kv ((B, h, S, d) x 2);
        mask (T, S) bool (True = may attend) or additive float, None = attend to all. Returns (B, T, D)."""
        q = self.split(self.q(x))
        k, v = kv if kv is not None else self.keys_values(kv_input).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, -1))


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

    def forward(self, x, mask, cache: KVCache | None = None, index: int = 0, memory=None, memory_kv=None):
        """x (B, T, D); mask over the attended positions (see `_Attention`); cache: write this layer's new keys/
        values at slot `index` and attend over the whole cache; memory (B, M, C) image tokens or memory_kv
        their precomputed cross keys/values (neither: the unimodal text-only mode). Returns (B, T, D)."""
        h = self.norm1(x)
        if cache is None:
            x = x + self.attn(h, h, mask)
        else:
            x = x + self.attn(h, mask=mask, kv=cache.write(index, self.attn.keys_values(h)))
        if self.cross is not None and memory_kv is not None:
            x = x + self.cross(self.norm_cross(x), kv=memory_kv)
        elif self.cross is not None and memory is not None:
            x = x + self.cross(self.norm_cross(x), memory)
        return x + self.mlp(self.norm2(x))


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

    def new_cache(self, batch: int = 1, capacity: int | None = None, memory: torch.Tensor | None = None,
                  ) -> KVCache:
        """An empty cache for `capacity` positions (default max_len) of `batch` sequences; with memory (B, M, C)
        the image tokens' cross-attention keys/values are computed here, once, for every later step."""
        cfg = self.cfg
        ref = self.embed.weight
        buffer = ref.new_zeros(cfg.depth, 2, batch, cfg.heads, capacity or cfg.max_len, cfg.dim // cfg.heads)
        memory_kv = None
        if memory is not None and cfg.memory_dim is not None:
            memory_kv = [tuple(layer.cross.keys_values(memory).unbind(0)) for layer in self.layers]
        return KVCache(buffer, memory_kv)

    def forward(self, ids: torch.Tensor, *, positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, memory: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache | None]:
        """ids (B, T) new tokens; positions (T,) or (B, T) (default: after the cache); mask (T, S) over the cached
        plus new tokens, bool (True = may attend) or additive float (default: causal); cache: a `new_cache`
        whose earlier tokens are attended to and which receives the new tokens' keys/values (in place);
        memory (B, M, C) image tokens (ignored when the cache holds their keys/values).
        Returns hidden (B, T, dim) and the cache (None without one)."""
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
        if mask is None and t > 1:  # one new token sees every cached one: no mask at all
            mask = causal_mask(t, past_len, ids.device)
        memory_kv = None if cache is None else cache.memory_kv
        x = self.embed(ids) + self.pos(positions)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i, memory, None if memory_kv is None else memory_kv[i])
        if cache is not None:
            cache.length = past_len + t
        return self.norm(x), cache

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
    The image tokens' cross keys/values are computed once (in `new_cache`). The reference Medusa decoding must
    reproduce exactly under greedy acceptance."""
    cache = model.new_cache(1, len(prompt) + max_new_tokens, memory)
    hidden, _ = model(prompt[None], cache=cache)
    out = []
    for step in range(max_new_tokens):
        token = model.logits(hidden[:, -1]).argmax(-1)
        out.append(int(token))
        if (eos is not None and out[-1] == eos) or step == max_new_tokens - 1:
            break
        hidden, _ = model(token[None], cache=cache)
    return torch.tensor(out, dtype=torch.long)
