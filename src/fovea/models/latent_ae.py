"""A tiny per-frame convolutional autoencoder: the latent space of fovea's small video diffusion transformer.

(B, 3, H, W) images in [-1, 1] <-> (B, C, H/4, W/4) latents. Deterministic (no KL term): trained with pixel MSE
plus a small L2 pull on the latents; `latent_scale` (the latents' std on the training set, a buffer) makes the
diffusion model see unit-variance latents. Frames are coded independently (no temporal compression), so a
latent video has the clip's frame count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LatentAEConfig:
    """width: channels of the conv stages; latent_channels: C of the (H/4, W/4) latent."""

    width: int = 48
    latent_channels: int = 4


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class LatentAutoencoder(nn.Module):
    """encode (B, 3, H, W) in [-1, 1] -> (B, C, H/4, W/4) scaled latents; decode back to [-1, 1] images."""

    def __init__(self, config: LatentAEConfig = LatentAEConfig()):
        super().__init__()
        w, c = config.width, config.latent_channels
        self.config = config
        self.encoder = nn.Sequential(_block(3, w), _block(w, w, 2), _block(w, 2 * w), _block(2 * w, 2 * w, 2),
                                     _block(2 * w, 2 * w), nn.Conv2d(2 * w, c, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 2 * w, 3, 1, 1), nn.SiLU(), _block(2 * w, 2 * w), nn.Upsample(scale_factor=2.0),
            _block(2 * w, w), _block(w, w), nn.Upsample(scale_factor=2.0), _block(w, w), nn.Conv2d(w, 3, 3, 1, 1))
        self.register_buffer("latent_scale", torch.ones(()))

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> unscaled latents (B, C, H/4, W/4)."""
        return self.encoder(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> latents / latent_scale."""
        return self.encoder(images) / self.latent_scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, 3, 4h, 4w) images (unclamped, about [-1, 1])."""
        return self.decoder(latents * self.latent_scale)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction (B, 3, H, W), raw latents (B, C, H/4, W/4))."""
        z = self.encode_raw(images)
        return self.decoder(z), z


def frames_to_unit(frames_uint8: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1]."""
    return frames_uint8.movedim(-1, -3).float() / 127.5 - 1.0


def unit_to_frames(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float about [-1, 1] -> (..., H, W, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)
