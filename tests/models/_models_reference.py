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
