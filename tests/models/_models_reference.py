"""Slow, obviously-correct references for the models' tests (independent of fovea.nn kernels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_loop(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """S6 recurrence, one step at a time: u, delta (Bt, KD, L); A (KD, N); B, C (Bt, K, N, L)."""
    bt, kd, length = u.shape
    k = B.shape[1]
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B = B.repeat_interleave(kd // k, dim=1)  # (Bt, KD, N, L)
    C = C.repeat_interleave(kd // k, dim=1)
    h = u.new_zeros(bt, kd, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.float()[None, :, None]
    return y


def cross_scan_ref(x):
    """(B, C, H, W) -> (B, 4, C, HW): row-major, column-major, and both reversed."""
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def cross_merge_ref(y, h, w):
    """(B, 4, C, HW) -> (B, C, HW): undo each order and sum."""
    b, _, c, _ = y.shape
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    return row + col.reshape(b, c, w, h).transpose(2, 3).reshape(b, c, h * w)
