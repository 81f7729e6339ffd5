"""DACER's networks: the diffusion actor's noise predictor and DSAC-T-style distributional critics."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class _MishFn(torch.autograd.Function):
    """mish(x) = x tanh(softplus(x)) in closed form: tanh(log(1 + e^x)) = n / (n + 2), n = e^x (e^x + 2);
    d/dx = t + x sigmoid(x) (1 - t^2). Inputs above 20 use e^20 (t = 1 in float32 there)."""

    @staticmethod
    def forward(ctx, x):
        e = torch.exp(x.clamp(max=20.0))
        n = e * (e + 2.0)
        t = n / (n + 2.0)
        ctx.save_for_backward(x, e, t)
        return x * t

    @staticmethod
    def backward(ctx, grad):
        x, e, t = ctx.saved_tensors
        return grad * (t + x * (e / (1.0 + e)) * (1.0 - t * t))


class Mish(nn.Module):
    """Same values as nn.Mish (to float32 rounding); about 1.7x faster forward and 1.3x faster backward on
    the CPU than torch's kernel at (256, 256) (measured with 1 thread)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MishFn.apply(x)


def mlp(sizes: list[int], act=Mish) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def sinusoidal(t: torch.Tensor, dim: int = 16) -> torch.Tensor:
    """(B,) steps -> (B, dim) [sin, cos] features at geometric frequencies, scaled by 1 / sqrt(dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1))
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1) / math.sqrt(dim)


class NoisePredictor(nn.Module):
    """eps(s, x_t, t): time -> sinusoidal 16 -> Linear 32 -> mish -> Linear 16; MLP hidden x depth (mish) on
    [obs, x_t, time features] -> act_dim."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.time = nn.Sequential(nn.Linear(16, 32), Mish(), nn.Linear(32, 16))
        self.net = mlp([obs_dim + act_dim + 16, *[hidden] * depth, act_dim])

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """obs (B, obs_dim), x (B, act_dim), t (B,) long -> eps (B, act_dim)."""
        return self.net(torch.cat([obs, x, self.time(sinusoidal(t))], dim=-1))

    def bind(self, obs: torch.Tensor, steps: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The same function for a whole chain on fixed obs (B, obs_dim), cheaper: the first layer is split as
        W [obs, x, f(t)] = W_o obs + W_x x + W_t f(t), with W_o obs + b and W_t f(t) for t = 1..steps computed
        once. Returns eps(x (B, act_dim), t (B,) long, all equal) -> (B, act_dim)."""
        first, rest = self.net[0], self.net[1:]
        o, a = self.obs_dim, self.act_dim
        w_obs, w_x, w_t = first.weight[:, :o], first.weight[:, o:o + a], first.weight[:, o + a:]
        base = F.linear(obs, w_obs, first.bias)  # (B, hidden)
        t_all = torch.arange(1, steps + 1, device=obs.device)
        t_proj = F.linear(self.time(sinusoidal(t_all)), w_t)  # (steps, hidden)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return rest(base + F.linear(x, w_x) + t_proj[int(t[0]) - 1])

        return eps


class DistributionalCritic(nn.Module):
    """Q(s, a) as a Gaussian: MLP [obs, act] -> (mean (B,), std (B,) = softplus(.) + 1e-6)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *[hidden] * depth, 2])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(torch.cat([obs, act], dim=-1))
        return out[:, 0], F.softplus(out[:, 1]) + 1e-6
