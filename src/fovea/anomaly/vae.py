"""Reconstruction anomaly models, part 1: the convolutional VAE, and the pieces the VQ-VAE shares.

A model of normal images only: what it cannot reconstruct is anomalous. The VAE (Kingma & Welling)
encodes x (B, 3, H, W) into a spatial Gaussian posterior N(mu, exp(logvar)) at H / 2^n_down,
samples z = mu + exp(logvar / 2) * eps (reparameterization trick; the mean at eval time), decodes,
and is trained on mean squared error + beta * KL(q(z|x) || N(0, I)), both per input element.
Anomaly map (B, 1, H, W) = per-pixel squared reconstruction error summed over the colour channels
(`map_mode="error"`), or |d ELBO / d x| summed over channels (`map_mode="elbo_grad"`, in-process
only: autograd cannot be exported). Image score = max of the Gaussian-smoothed map.
Training runs on fovea's engine (`fovea.engine.train.fit`) like Reverse Distillation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly._train import train_reconstruction
from fovea.anomaly.postprocess import gaussian_blur_map
from fovea.errors import ConfigError


# --------------------------------------------------------------------------- closed forms
def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (given, or drawn): gradients reach mu and logvar."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over all non-batch dims: (B, ...) -> (B,).

    Closed form -1/2 sum(1 + logvar - mu^2 - exp(logvar)).
    """
    return -0.5 * (1.0 + logvar - mu * mu - logvar.exp()).flatten(1).sum(1)


def pixel_error_map(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Squared reconstruction error summed over channels: (B, C, H, W) x2 -> (B, 1, H, W)."""
    return (x - recon).pow(2).sum(1, keepdim=True)


# --------------------------------------------------------------------------- conv blocks
def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class DownStage(nn.Module):
    """Stride-2 conv, then a 3x3 conv; GroupNorm + SiLU. (B, cin, H, W) -> (B, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), _norm(cout), nn.SiLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1), _norm(cout), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpStage(nn.Module):
    """Nearest 2x upsampling and two 3x3 convs; GroupNorm + SiLU. (B, cin, h, w) -> (B, cout, 2h, 2w)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1),
                                  _norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1), _norm(cout), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def stage_widths(width: int, n_down: int) -> list[int]:
    """Channels after the stem and each down stage: width doubling, capped at 8x."""
    return [width * min(2 ** i, 8) for i in range(n_down + 1)]


class ConvEncoder(nn.Module):
    """(B, 3, H, W) -> (B, out_channels, H / 2^n_down, W / 2^n_down)."""

    def __init__(self, width: int, n_down: int, out_channels: int, in_channels: int = 3):
        super().__init__()
        w = stage_widths(width, n_down)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1), _norm(w[0]), nn.SiLU())
        self.stages = nn.Sequential(*[DownStage(w[i], w[i + 1]) for i in range(n_down)])
        self.head = nn.Conv2d(w[-1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class ConvDecoder(nn.Module):
    """(B, in_channels, h, w) -> (B, 3, h * 2^n_up, w * 2^n_up); `conv_out` is the last layer (VQGAN's
    adaptive weight is taken on its weight)."""

    def __init__(self, width: int, n_up: int, in_channels: int, out_channels: int = 3):
        super().__init__()
        w = stage_widths(width, n_up)[::-1]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1), _norm(w[0]), nn.SiLU())
        self.stages = nn.Sequential(*[UpStage(w[i], w[i + 1]) for i in range(n_up)])
        self.conv_out = nn.Conv2d(w[-1], out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.stages(self.stem(z)))


def check_input_size(x: torch.Tensor, n_down: int) -> None:
    """The autoencoders need H and W divisible by 2^n_down (the pipeline always feeds its input size)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # export: the pipeline feeds its fixed input size, checked when the model first ran
    f = 2 ** n_down
    if x.shape[-2] % f or x.shape[-1] % f:
        raise ConfigError(f"input {tuple(x.shape[-2:])} is not divisible by 2^n_down = {f}. Fix: use an "
                          f"--input-size that is a multiple of {f}, or a smaller n_down.")


# --------------------------------------------------------------------------- the VAE
@dataclass
class VAEConfig:
    """Model and training knobs. backbone/weights/layers are accepted for the common CLI options and
    unused by the VAE (it sees pixels only)."""

    width: int = 32                   # channels after the stem; doubled per down stage (capped at 8x)
    n_down: int = 4                   # latent at H / 2^n_down
    latent_channels: int = 8
    beta: float = 1.0                 # KL weight (per input element, like the reconstruction term)
    map_mode: str = "error"           # "error" | "elbo_grad"
    score_sigma: float = 4.0          # Gaussian smoothing of the map before its max = image score
    backbone: str = "efficientnet_lite0"
    weights: str | None = "default"
    layers: tuple[int, ...] = ()
    # training (with fovea.engine.train.fit)
    epochs: int = 40
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    out_dir: str | None = None

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        if self.map_mode not in ("error", "elbo_grad"):
            raise ConfigError(f"VAE map_mode={self.map_mode!r}; use 'error' or 'elbo_grad'")
        if self.n_down < 1 or self.width < 1 or self.latent_channels < 1:
            raise ConfigError(f"VAE sizes must be >= 1: width={self.width}, n_down={self.n_down}, "
                              f"latent_channels={self.latent_channels}")
        if self.beta < 0:
            raise ConfigError(f"VAE beta={self.beta} must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


class VAE(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W)) in squared-error units
    (or |dELBO/dx| units with map_mode="elbo_grad")."""

    def __init__(self, config: VAEConfig | None = None, **overrides):
        super().__init__()
        self.config = config or VAEConfig(**overrides)
        cfg = self.config
        self.encoder = ConvEncoder(cfg.width, cfg.n_down, 2 * cfg.latent_channels)
        self.decoder = ConvDecoder(cfg.width, cfg.n_down, cfg.latent_channels)
        self.history: list[dict] = []

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> mu, logvar, each (B, latent_channels, H / 2^n, W / 2^n)."""
        check_input_size(x, self.config.n_down)
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon (B, 3, H, W), mu, logvar); z sampled in training, z = mu in eval."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar) if self.training else mu
        return self.decoder(z), mu, logvar

    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-element MSE, per-element KL, and loss = mse + beta * kl (the negative ELBO up to scale)."""
        recon, mu, logvar = self.reconstruct(x)
        mse = F.mse_loss(recon, x)
        kl = gaussian_kl(mu, logvar).mean() / x[0].numel()
        return {"loss": mse + self.config.beta * kl, "mse": mse, "kl": kl}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.loss_terms(x)["loss"]

    def elbo_gradient_map(self, x: torch.Tensor) -> torch.Tensor:
        """|d(-ELBO)/dx| summed over channels, per image: (B, 3, H, W) -> (B, 1, H, W)."""
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            raise ConfigError("VAE map_mode='elbo_grad' needs autograd and cannot be exported. Fix: fit with "
                              "map_mode='error' for a model you export.")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            recon, mu, logvar = self.reconstruct(xg)
            per_image = (recon - xg).pow(2).flatten(1).sum(1) + self.config.beta * gaussian_kl(mu, logvar)
            (grad,) = torch.autograd.grad(per_image.sum(), xg)
        return grad.abs().sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.map_mode == "elbo_grad":
            maps = self.elbo_gradient_map(x)
        else:
            recon, _, _ = self.reconstruct(x)
            maps = pixel_error_map(x, recon)
        smooth = gaussian_blur_map(maps, self.config.score_sigma)
        return smooth.amax(dim=(1, 2, 3)), maps

    def fit(self, train_loader: Iterable, progress=None):
        """Train on normal images with the engine (see `train_reconstruction`); returns its TrainResult."""
        return train_reconstruction(self, train_loader, lambda m, x: m.loss(x), progress)


