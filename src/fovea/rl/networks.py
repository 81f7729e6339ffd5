"""DACER's networks: the diffusion actor's noise predictor and DSAC-T-style distributional critics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: list[int], act=nn.Mish) -> nn.Sequential:
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
        self.time = nn.Sequential(nn.Linear(16, 32), nn.Mish(), nn.Linear(32, 16))
        self.net = mlp([obs_dim + act_dim + 16, *[hidden] * depth, act_dim])

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, x, self.time(sinusoidal(t))], dim=-1))


class DistributionalCritic(nn.Module):
    """Q(s, a) as a Gaussian: MLP [obs, act] -> (mean (B,), std (B,) = softplus(.) + 1e-6)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, depth: int = 3):
        super().__init__()
        self.net = mlp([obs_dim + act_dim, *[hidden] * depth, 2])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(torch.cat([obs, act], dim=-1))
        return out[:, 0], F.softplus(out[:, 1]) + 1e-6
