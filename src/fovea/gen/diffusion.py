"""The diffusion process of fovea's video generator: a variance-preserving cosine schedule with v-prediction
(Salimans & Ho 2022), deterministic DDIM sampling (eta = 0) and classifier-free guidance.

Time t in [0, 1]: alpha(t) = cos(pi t / 2), sigma(t) = sin(pi t / 2), x_t = alpha x0 + sigma eps,
v = alpha eps - sigma x0, so x0 = alpha x_t - sigma v and eps = sigma x_t + alpha v.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, ...), t (B,)) -> v (B, ...)


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) at times t (any shape)."""
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def _bcast(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape + (1,) * (x.dim() - a.dim()))


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, v target) for clean x0 (B, ...), noise eps (B, ...), times t (B,)."""
    a, s = alpha_sigma(t)
    a, s = _bcast(a, x0), _bcast(s, x0)
    return a * x0 + s * eps, a * eps - s * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, s = alpha_sigma(t)
    return _bcast(a, x_t) * x_t - _bcast(s, x_t) * v


def ddim_step(x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM update from t to t_next < t given the x0 estimate: eps from (x_t, x0), then
    x_{t_next} = alpha(t_next) x0 + sigma(t_next) eps. t, t_next: scalars or (B,)."""
    a, s = alpha_sigma(t)
    a_n, s_n = alpha_sigma(t_next)
    eps = (x_t - _bcast(a, x_t) * x0) / _bcast(s, x_t).clamp_min(1e-8)
    return _bcast(a_n, x_t) * x0 + _bcast(s_n, x_t) * eps


def sampling_times(steps: int) -> torch.Tensor:
    """(steps + 1,) times from 1 (pure noise) down to 0."""
    return torch.linspace(1.0, 0.0, steps + 1)


def guided(v_uncond: torch.Tensor, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + scale (v_c - v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


@torch.no_grad()
def ddim_sample(denoise_x0: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], noise: torch.Tensor,
                steps: int) -> torch.Tensor:
    """DDIM from pure noise (B, ...) with `denoise_x0(x_t, t (B,), step) -> x0 estimate`; returns x0."""
    times = sampling_times(steps)
    x = noise
    for i in range(steps):
        t = times[i].expand(noise.shape[0])
        x0 = denoise_x0(x, t, i)
        x = ddim_step(x, x0, t, times[i + 1].expand(noise.shape[0]))
    return x
