"""2-bit packed storage of ternary weights, in the layout of HF transformers' BitNet integration.

Layout (identical to `transformers.integrations.bitnet.pack_weights`): a ternary matrix W of shape
(N, K) (a conv weight is viewed as (C_out, C_in * kh * kw)) is stored as codes c = w + 1 in {0, 1, 2}
in a uint8 tensor P of shape (R, K) with R = ceil(N / 4); bits 2i..2i+1 of P[r, k] hold row
r + i * R of W (i = 0..3; rows past N are code 0 and ignored on unpack). Each byte therefore holds
four *output rows* of one input column, which is what the CPU kernel wants: one int8 activation
x_k multiplies four weights that go to four accumulators. One fp32 scale per tensor (absmean).

This is neither bitnet.cpp's I2_S (4 consecutive 32-element groups per 32-byte block, along K) nor
its GPU W2A8 interleaved tiles: files written here load in HF's unpack_weights, not in bitnet.cpp.
"""

from __future__ import annotations

import torch

__all__ = ["pack_ternary", "unpack_ternary", "packed_rows"]

_CODES_PER_BYTE = 4


def packed_rows(out_features: int) -> int:
    """R = ceil(N / 4): rows of the packed tensor for N output rows."""
    return (out_features + _CODES_PER_BYTE - 1) // _CODES_PER_BYTE


def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """Pack ternary codes (N, K) int in {-1, 0, 1} into uint8 (ceil(N/4), K), HF layout."""
    if codes.dim() != 2:
        raise ValueError(f"pack_ternary wants a 2-d (N, K) tensor, got shape {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < -1 or codes.max() > 1):
        raise ValueError("pack_ternary: codes must be in {-1, 0, 1}; ternarize the weight first")
    n, k = codes.shape
    rows = packed_rows(n)
    padded = torch.zeros(rows * _CODES_PER_BYTE, k, dtype=torch.uint8)
    padded[:n] = (codes.to(torch.int16) + 1).to(torch.uint8)
    planes = padded.view(_CODES_PER_BYTE, rows, k)  # plane i = rows i*R .. i*R + R - 1
    packed = torch.zeros(rows, k, dtype=torch.uint8)
    for i in range(_CODES_PER_BYTE):
        packed |= planes[i] << (2 * i)
    return packed


def unpack_ternary(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """Inverse of `pack_ternary`: uint8 (ceil(N/4), K) -> int8 codes (N, K) in {-1, 0, 1}."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ValueError(f"unpack_ternary wants a 2-d uint8 tensor, got {packed.dtype} {tuple(packed.shape)}")
    rows, k = packed.shape
    if packed_rows(out_features) != rows:
        raise ValueError(f"unpack_ternary: {rows} packed rows cannot hold {out_features} output rows")
    planes = [((packed >> (2 * i)) & 3) for i in range(_CODES_PER_BYTE)]
    codes = torch.cat(planes, dim=0)[:out_features]
    return codes.to(torch.int8) - 1
