"""Chunked selective scan in plain PyTorch: the fallback when the native kernel is unavailable.

The S6 recurrence per channel c and state n (fp32),

    h_t = a_t * h_{t-1} + x_t,   a_t = exp(dt_t * A_n) in (0, 1],   x_t = dt_t * B_t * u_t,

is a first-order linear recurrence. `chunked_linear_scan` solves it in three vectorised passes
over chunks of T steps (T ~ sqrt(L), so ~2*sqrt(L) small Python steps instead of L):

1. inside every chunk, run the recurrence from a zero state (T steps, all chunks at once);
2. carry the states across chunk boundaries: H_c = P_c * H_{c-1} + hl_c(last), where
   P_c = prod of a over chunk c (L/T steps on (M,) tensors);
3. add the carried state: h_t = hl_t + exp(S_t) * H_{c-1}, S_t = sum of log a from the chunk
   start to t (a segment sum inside one chunk).

Stability: every factor is exp of a sum of non-positive numbers, so it lies in [0, 1]; it may
underflow to 0, which is the correct limit, and nothing is ever divided by it (the "easy" scan
divides by exp(A * cumsum(dt)) and turns 0 into inf/NaN at d_state 16).

The backward pass is the same scan run in reverse on the gradient (gh_t = C_t gy_t +
a_{t+1} gh_{t+1}), followed by elementwise products, so memory stays linear in L; channels are
processed in blocks of bounded size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_BLOCK_ELEMS = 1 << 21  # elements of one (Bt, channels, N, L) working tensor (8 MB in fp32)


def chunked_linear_scan(la: torch.Tensor, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Solve h_t = exp(la_t) h_{t-1} + x_t, h_{-1} = 0, along the last dim. la, x: (..., L)."""
    shape = x.shape
    L = shape[-1]
    la = la.reshape(-1, L)
    x = x.reshape(-1, L)
    M = x.shape[0]
    T = chunk or max(1, int(math.ceil(math.sqrt(L))))
    nc = -(-L // T)
    pad = nc * T - L
    if pad:
        la = F.pad(la, (0, pad))
        x = F.pad(x, (0, pad))
    la3 = la.view(M, nc, T)
    # 1. zero-state scan inside each chunk, time-major so every step reads contiguous memory
    a = la3.exp().permute(2, 0, 1).contiguous()  # (T, M, nc)
    hl = x.view(M, nc, T).permute(2, 0, 1).contiguous()
    for j in range(1, T):
        hl[j].addcmul_(a[j], hl[j - 1])
    # 2. states entering each chunk
    seg = la3.cumsum(-1).exp()  # (M, nc, T): decay from the chunk start through step t, in [0, 1]
    decay = seg[:, :, -1]
    last = hl[-1]  # (M, nc)
    carry = torch.empty_like(last)
    H = torch.zeros_like(last[:, 0])
    for c in range(nc):
        carry[:, c] = H
        H = torch.addcmul(last[:, c], decay[:, c], H)
    # 3. add the carried state, decayed to each step
    h = hl.permute(1, 2, 0) + seg * carry.unsqueeze(-1)
    return h.reshape(M, nc * T)[:, :L].reshape(shape)


def _blocks(Bt: int, K: int, Dg: int, N: int, L: int):
    """Yield (k, c0, c1): channel ranges inside one direction group, sized to bound memory."""
    cb = max(1, min(Dg, _BLOCK_ELEMS // max(1, Bt * N * L)))
    for k in range(K):
        for s in range(0, Dg, cb):
            yield k, k * Dg + s, k * Dg + min(Dg, s + cb)


def _dt(delta, bias, softplus):
    z = delta + bias[:, None]
    return F.softplus(z) if softplus else z


def forward(u, delta, A, B, C, D, bias, softplus: bool) -> torch.Tensor:
    """y (Bt, KD, L) fp32 of the grouped selective scan; inputs fp32 as in `selective_scan`."""
    Bt, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    Dg = KD // K
    y = torch.empty_like(u)
    for k, c0, c1 in _blocks(Bt, K, Dg, N, L):
        uk = u[:, c0:c1]
        dt = _dt(delta[:, c0:c1], bias[c0:c1], softplus)
        la = dt.unsqueeze(2) * A[c0:c1, :, None]  # (Bt, cb, N, L)
        x = (dt * uk).unsqueeze(2) * B[:, k, None]
        h = chunked_linear_scan(la, x)
        y[:, c0:c1] = (h * C[:, k, None]).sum(2) + D[c0:c1, None] * uk
    return y


def plain_forward(u, delta, A, B, C, D, bias, softplus: bool) -> torch.Tensor:
    """Same as `forward` but without in-place writes, for tracing/ONNX export and autograd."""
    Bt, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    Dg = KD // K
    dt = _dt(delta, bias, softplus)
    la = dt.unsqueeze(2) * A[:, :, None]
    Bx = B.unsqueeze(2).expand(Bt, K, Dg, N, L).reshape(Bt, KD, N, L)
    Cx = C.unsqueeze(2).expand(Bt, K, Dg, N, L).reshape(Bt, KD, N, L)
    x = (dt * u).unsqueeze(2) * Bx
    T = max(1, int(math.ceil(math.sqrt(L))))
    nc = -(-L // T)
    pad = nc * T - L
    la3 = F.pad(la, (0, pad)).reshape(Bt, KD, N, nc, T)
    x3 = F.pad(x, (0, pad)).reshape(Bt, KD, N, nc, T)
    a = la3.exp()
    steps = [x3[..., 0]]
    for j in range(1, T):
        steps.append(x3[..., j] + a[..., j] * steps[-1])
    hl = torch.stack(steps, -1)
    seg = la3.cumsum(-1).exp()
    H = torch.zeros_like(hl[..., 0, 0])
    carries = []
    for c in range(nc):
        carries.append(H)
        H = hl[..., c, -1] + seg[..., c, -1] * H
    h = hl + seg * torch.stack(carries, -1).unsqueeze(-1)
    h = h.reshape(Bt, KD, N, nc * T)[..., :L]
    return (h * Cx).sum(2) + D[:, None] * u


def backward(gy, u, delta, A, B, C, D, bias, softplus: bool):
    """Gradients (du, ddelta, dA, dB, dC, dD, dbias) of `forward` given gy (Bt, KD, L)."""
    Bt, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    Dg = KD // K
    du = torch.empty_like(u)
    ddelta = torch.empty_like(u)
    dA = torch.empty_like(A)
    dB = torch.zeros_like(B)
    dC = torch.zeros_like(C)
    for k, c0, c1 in _blocks(Bt, K, Dg, N, L):
        uk, gyk = u[:, c0:c1], gy[:, c0:c1]
        z = delta[:, c0:c1] + bias[c0:c1, None]
        dt = F.softplus(z) if softplus else z
        la = dt.unsqueeze(2) * A[c0:c1, :, None]  # (Bt, cb, N, L)
        dtu = dt * uk
        Bk = B[:, k, None]
        h = chunked_linear_scan(la, dtu.unsqueeze(2) * Bk)
        # reverse scan: gh_t = C_t gy_t + a_{t+1} gh_{t+1}
        la_next = F.pad(la[..., 1:], (0, 1))
        g = C[:, k, None] * gyk.unsqueeze(2)
        gh = chunked_linear_scan(la_next.flip(-1), g.flip(-1)).flip(-1)
        h_prev = F.pad(h[..., :-1], (1, 0))
        dla = gh * la.exp() * h_prev  # d loss / d (dt_t * A_n)
        ghB = (gh * Bk).sum(2)
        ddt = (dla * A[c0:c1, :, None]).sum(2) + ghB * uk
        du[:, c0:c1] = dt * ghB + D[c0:c1, None] * gyk
        dA[c0:c1] = (dla * dt.unsqueeze(2)).sum((0, 3))
        dB[:, k] += (gh * dtu.unsqueeze(2)).sum(1)
        dC[:, k] += (h * gyk.unsqueeze(2)).sum(1)
        ddelta[:, c0:c1] = ddt * torch.sigmoid(z) if softplus else ddt
    dD = (gy * u).sum((0, 2))
    dbias = ddelta.sum((0, 2))
    return du, ddelta, dA, dB, dC, dD, dbias
