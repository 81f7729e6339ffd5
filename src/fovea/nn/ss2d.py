"""SS2D: the 2D selective-scan core shared by VMamba and SparX.

A (B, D, H, W) map is cross-scanned in four orders, each sequence gets its own input-dependent
(delta, B, C) from a fused per-direction projection, runs through the S6 selective scan, and the
four outputs are re-aligned and summed. Parameters use the official fused layout so released
checkpoints load by name: `x_proj_weight` (K, R+2N, D), `dt_projs_weight` (K, D, R),
`dt_projs_bias` (K, D), `A_logs` (K*D, N), `Ds` (K*D,), K = 4 directions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SS2DCore", "SelectiveScanOp", "inverse_softplus_dt_bias", "scan_flops"]

_IMPL: dict = {}


def _kernels():
    """Import the scan kernels on first use (keeps `import fovea.models` cheap)."""
    if not _IMPL:
        from fovea.nn.cross_scan import cross_merge, cross_scan
        from fovea.nn.selective_scan import selective_scan

        _IMPL.update(selective_scan=selective_scan, cross_scan=cross_scan, cross_merge=cross_merge)
    return _IMPL


def scan_flops(u_shape, n_state: int) -> int:
    """The authors' scan cost: 9*B*L*D*N + B*D*L for u of shape (B, D, L) (D = K*channels)."""
    b, d, l_len = u_shape
    return 9 * b * l_len * d * n_state + b * d * l_len


class SelectiveScanOp(nn.Module):
    """Module wrapper around `selective_scan` so FLOP counters can hook the call.

    While `skip_compute` is set (FLOP counting on meta/fake tensors) it returns an empty
    output of the right shape instead of running the kernel.
    """

    skip_compute = False

    def forward(self, u, delta, A, B, C, D, delta_bias):
        if SelectiveScanOp.skip_compute:
            return torch.empty(u.shape, dtype=torch.float32, device=u.device)
        fn = _kernels()["selective_scan"]
        return fn(u, delta, A, B, C, D=D, delta_bias=delta_bias, delta_softplus=True)


def inverse_softplus_dt_bias(d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4):
    """dt ~ log-uniform in [dt_min, dt_max] (clamped at floor); returns b with softplus(b) = dt."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class SS2DCore(nn.Module):
    """Base class holding the fused SSM parameters and the four-direction scan.

    Subclasses add their own input projection, depthwise conv, output norm and projection, and
    call `forward_ssm(x)`: (B, D, H, W) -> (B, D, H, W) in fp32.
    """

    k_group = 4

    def _init_ssm(
        self,
        d_inner: int,
        d_state: int,
        dt_rank: int,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
    ) -> None:
        """Official "v0" init: Linear-default x_proj, U(+-R^-0.5) dt_proj, S4D-real A, D = 1."""
        k = self.k_group
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        bound = 1.0 / math.sqrt(d_inner)  # nn.Linear default (kaiming_uniform a=sqrt(5))
        self.x_proj_weight = nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        std = dt_rank**-0.5 * dt_scale
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-std, std))
        self.dt_projs_bias = nn.Parameter(
            torch.stack([inverse_softplus_dt_bias(d_inner, dt_min, dt_max, dt_init_floor) for _ in range(k)])
        )
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(a))  # S4D-real: A = -(1..N)
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.scan = SelectiveScanOp()

    def forward_ssm(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, D, H, W) fp32: cross-scan, S6 scan per direction, cross-merge."""
        ops = _kernels() if not SelectiveScanOp.skip_compute else None
        b, d, h, w = x.shape
        k, r, n, length = self.k_group, self.dt_rank, self.d_state, h * w
        if ops is None:
            xs = x.reshape(b, 1, d, length).expand(b, k, d, length)
        else:
            xs = ops["cross_scan"](x)  # (B, K, D, L)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (B, K, R+2N, L)
        dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (B, K, D, L)
        ys = self.scan(
            xs.reshape(b, k * d, length).float(),
            dts.reshape(b, k * d, length).float(),
            -torch.exp(self.A_logs.float()),
            bs.float().contiguous(),
            cs.float().contiguous(),
            self.Ds.float(),
            self.dt_projs_bias.reshape(-1).float(),
        )
        if ops is None:
            y = ys.reshape(b, k, d, length).sum(1)
        else:
            y = ops["cross_merge"](ys.reshape(b, k, d, length), h, w)
        return y.reshape(b, d, h, w)
