"""The diffusion policy's sampler: a variance-preserving schedule over T steps and DDPM ancestral sampling
from N(0, I), differentiable through the whole chain (DACER back-propagates the Q value through it).

Schedule (DACER, after Diffusion-QL): alpha_t = exp(-b_min / T - (b_max - b_min) (2t - 1) / (2 T^2)),
t = 1..T, beta_t = 1 - alpha_t, alpha_bar_t = prod_{s <= t} alpha_s; b_min 0.1, b_max 10.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class _InwardClip(torch.autograd.Function):
    """clamp(x, -1, 1) whose gradient is kept outside the box when a descent step (x - lr g) moves x back
    towards it, and zeroed when it would move x further out; inside the box the gradient is 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        keep = ((x <= 1.0) | (grad > 0)) & ((x >= -1.0) | (grad < 0))
        return grad * keep


def clip_unit(x: torch.Tensor, grad: str = "zero") -> torch.Tensor:
    """Clip to [-1, 1]. grad "zero": the plain clamp (zero gradient outside, as in the official code; a chain
    whose x0 estimate leaves the box gets no gradient back and can stay stuck at the bound); "inward": the
    gradient outside is kept when it points back into the box (see _InwardClip)."""
    if grad == "zero":
        return x.clamp(-1.0, 1.0)
    if grad == "inward":
        return _InwardClip.apply(x)
    raise ValueError(f"clip gradient rule {grad!r}: use 'zero' or 'inward'")


class VPSchedule(nn.Module):
    """Buffers (T,) indexed by t - 1: alphas, betas, alpha_bars, and the posterior q(x_{t-1} | x_t, x0)."""

    def __init__(self, steps: int = 20, b_min: float = 0.1, b_max: float = 10.0):
        super().__init__()
        t = torch.arange(1, steps + 1, dtype=torch.float64)
        alphas = torch.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2 * t - 1) / steps ** 2)
        bars = torch.cumprod(alphas, 0)
        bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), bars[:-1]])
        betas = 1 - alphas
        self.steps = steps
        for name, value in {
            "alphas": alphas, "betas": betas, "alpha_bars": bars,
            "post_var": betas * (1 - bars_prev) / (1 - bars),
            "post_coef_x0": betas * bars_prev.sqrt() / (1 - bars),
            "post_coef_xt": (1 - bars_prev) * alphas.sqrt() / (1 - bars),
        }.items():
            self.register_buffer(name, value.float())


def ddpm_sample(noise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], schedule: VPSchedule,
                shape: tuple[int, ...], generator: torch.Generator | None = None, device=None,
                clip_grad: str = "zero") -> torch.Tensor:
    """x_T ~ N(0, I); for t = T..1: eps = noise_fn(x_t, t (B,) long); x0 = clip((x_t - sqrt(1 - abar_t) eps) /
    sqrt(abar_t), -1, 1); x_{t-1} = post mean + sqrt(post var) z (no noise at t = 1). Returns x_0 (shape).
    clip_grad: the gradient rule of that clip (see clip_unit)."""
    x = torch.randn(shape, generator=generator, device=device)
    for t in range(schedule.steps, 0, -1):
        i = t - 1
        eps = noise_fn(x, torch.full((shape[0],), t, dtype=torch.long, device=x.device))
        bar = schedule.alpha_bars[i]
        x0 = clip_unit((x - (1 - bar).sqrt() * eps) / bar.sqrt(), clip_grad)
        mean = schedule.post_coef_x0[i] * x0 + schedule.post_coef_xt[i] * x
        if t > 1:
            x = mean + schedule.post_var[i].sqrt() * torch.randn(shape, generator=generator, device=device)
        else:
            x = mean
    return x
