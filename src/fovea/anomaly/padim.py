"""PaDiM (Defard et al., ICPR-W 2020): a Gaussian per patch position.

Features of three stages are upsampled to the finest one and concatenated; a random subset of
`n_features` channels is kept; at each position a mean and a covariance (+ eps * I) are fitted on
normal images. The map is the Mahalanobis distance of each test patch to its position's Gaussian;
the image score is the map's maximum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly.features import FeatureExtractor


@dataclass
class PadimConfig:
    backbone: str = "efficientnet_lite0"
    layers: tuple[int, ...] = (1, 2, 3)
    n_features: int = 100
    covariance_eps: float = 0.01
    seed: int = 0
    weights: str | None = "default"

    def to_dict(self) -> dict:
        return asdict(self)


class Padim(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W)) in Mahalanobis units."""

    def __init__(self, config: PadimConfig | None = None, **overrides):
        super().__init__()
        self.config = config or PadimConfig(**overrides)
        self.extractor = FeatureExtractor(self.config.backbone, self.config.layers, self.config.weights)
        total = sum(self.extractor.channels)
        n = min(self.config.n_features, total)
        gen = torch.Generator().manual_seed(self.config.seed)
        self.register_buffer("channel_index", torch.randperm(total, generator=gen)[:n].sort().values)
        self.register_buffer("mean", torch.zeros(0, n))  # (P, d)
        self.register_buffer("inv_covariance", torch.zeros(0, n, n))  # (P, d, d)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d, h, w) random channel subset of the concatenated stages."""
        feats = self.extractor(x)
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="nearest") for f in feats[1:]]
        return torch.cat(feats, 1).index_select(1, self.channel_index)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor | dict], progress=None) -> None:
        """Per-position mean and inverse covariance from normal images, accumulated in float64."""
        self.eval()
        total = None
        outer = None
        count = 0
        for batch in batches:
            x = batch["image"] if isinstance(batch, dict) else batch
            e = self.embed(x).double()  # (B, d, h, w)
            b, d, h, w = e.shape
            e = e.permute(2, 3, 0, 1).reshape(h * w, b, d)  # (P, B, d)
            total = e.sum(1) if total is None else total + e.sum(1)
            o = torch.einsum("pbi,pbj->pij", e, e)
            outer = o if outer is None else outer + o
            count += b
        if count < 2:
            raise ValueError(f"PaDiM.fit needs at least 2 training images, got {count}")
        mean = total / count
        cov = (outer - count * torch.einsum("pi,pj->pij", mean, mean)) / (count - 1)
        cov = cov + self.config.covariance_eps * torch.eye(cov.shape[-1], dtype=cov.dtype)
        self.mean = mean.float()
        self.inv_covariance = torch.linalg.inv(cov).float()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        b, d, h, w = e.shape
        delta = e.permute(0, 2, 3, 1).reshape(b, h * w, d) - self.mean[None]  # (B, P, d)
        m = torch.einsum("bpi,pij,bpj->bp", delta, self.inv_covariance, delta).clamp_min(0).sqrt()
        maps = F.interpolate(m.reshape(b, 1, h, w), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return maps.amax(dim=(1, 2, 3)), maps
