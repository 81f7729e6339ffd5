"""Tiled attention with an online softmax (FlashAttention-2 order): a readable exact reference.

Models call `F.scaled_dot_product_attention` (on CPU that is already a fused flash kernel); this
module exists to test against and to show the algorithm. Memory is O(N * block) instead of the
O(N * M) score matrix of naive attention.

Forward, per query block Q_i, over key blocks K_j, V_j (running max m, running sum l, output acc):
    S = Q_i K_j^T * scale;  m' = max(m, rowmax S);  P = exp(S - m')
    l = exp(m - m') l + rowsum P;  acc = exp(m - m') acc + P V_j;  m = m'
    O_i = acc / l;  L_i = m + log l  (the log-sum-exp, the only statistic kept for backward)
Backward recomputes P = exp(S - L_i) block by block; with D_i = rowsum(dO_i * O_i):
    dV_j += P^T dO_i;  dS = P * (dO_i V_j^T - D_i);  dQ_i += dS K_j scale;  dK_j += dS^T Q_i scale
"""

from __future__ import annotations

import math

import torch

__all__ = ["naive_attention", "tiled_attention"]


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale) V with the full score matrix: q (..., N, d), k (..., M, d), v (..., M, dv)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


def _forward(q, k, v, scale, block_q, block_k):
    n, m = q.shape[-2], k.shape[-2]
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], dtype=q.dtype)
    for i0 in range(0, n, block_q):
        qi = q[..., i0:i0 + block_q, :]
        row_max = torch.full(qi.shape[:-1], -math.inf, dtype=q.dtype)
        row_sum = torch.zeros(qi.shape[:-1], dtype=q.dtype)
        acc = torch.zeros(*qi.shape[:-1], v.shape[-1], dtype=q.dtype)
        for j0 in range(0, m, block_k):
            s = qi @ k[..., j0:j0 + block_k, :].transpose(-1, -2) * scale
            new_max = torch.maximum(row_max, s.amax(dim=-1))
            p = torch.exp(s - new_max[..., None])
            correction = torch.exp(row_max - new_max)
            row_sum = correction * row_sum + p.sum(dim=-1)
            acc = correction[..., None] * acc + p @ v[..., j0:j0 + block_k, :]
            row_max = new_max
        out[..., i0:i0 + block_q, :] = acc / row_sum[..., None]
        lse[..., i0:i0 + block_q] = row_max + torch.log(row_sum)
    return out, lse


def _backward(q, k, v, out, lse, grad_out, scale, block_q, block_k):
    n, m = q.shape[-2], k.shape[-2]
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (grad_out * out).sum(dim=-1)  # D_i = rowsum(dO * O)
    for j0 in range(0, m, block_k):
        kj, vj = k[..., j0:j0 + block_k, :], v[..., j0:j0 + block_k, :]
        for i0 in range(0, n, block_q):
            qi, doi = q[..., i0:i0 + block_q, :], grad_out[..., i0:i0 + block_q, :]
            p = torch.exp(qi @ kj.transpose(-1, -2) * scale - lse[..., i0:i0 + block_q, None])
            dv[..., j0:j0 + block_k, :] += p.transpose(-1, -2) @ doi
            ds = p * (doi @ vj.transpose(-1, -2) - delta[..., i0:i0 + block_q, None])
            dq[..., i0:i0 + block_q, :] += ds @ kj * scale
            dk[..., j0:j0 + block_k, :] += ds.transpose(-1, -2) @ qi * scale
    return dq, dk, dv


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, block_q, block_k):
        out, lse = _forward(q, k, v, scale, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.config = (scale, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, out, lse, grad_out.contiguous(), *ctx.config)
        return dq, dk, dv, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None,
                    block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """Exact softmax(Q K^T * scale) V computed block by block, with a blockwise backward.

    q (..., N, d), k (..., M, d), v (..., M, dv) -> (..., N, dv); scale defaults to d^-0.5 as SDPA.
    Extra memory: O(N + block_q * block_k) per batch-head instead of the (N, M) score matrix.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"tiled_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block sizes must be >= 1, got block_q={block_q}, block_k={block_k}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _TiledAttention.apply(q, k, v, scale, int(block_q), int(block_k))
