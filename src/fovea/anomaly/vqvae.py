"""Reconstruction anomaly models, part 2: VQ-VAE (van den Oord et al. 2017), optionally with VQGAN losses.

Encoder (B, C, h, w) -> (B, D, h / 2^n, w / 2^n) -> `fovea.nn.quantizer.VectorQuantizer` (paper loss,
beta = 0.25 on the encoder term, straight-through; EMA codebook gamma = 0.99 and dead-code restarts by
default) -> decoder. Trained on normal images with MSE + the quantiser loss, or with `gan=True` on the
VQGAN losses (`fovea.anomaly.vqgan_losses`: L1 + perceptual term on frozen EfficientNet-Lite0 features,
PatchGAN hinge loss from `disc_start`, adaptive weight on the decoder's last layer). A normal-only
codebook cannot express a defect, so the reconstruction replaces it by normal content. What is
reconstructed (`target`): the image (C = 3), or the frozen EfficientNet-Lite0 features of `feature_layers`
standardised per channel (default; a pixel codebook also learns to rebuild rotated bricks, features of
the wrong orientation it cannot). Anomaly map (B, 1, H, W) = squared error summed over channels per
position (bilinearly upsampled for features); score = max of the smoothed map.
Codebook usage and perplexity are logged per epoch into `history`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly.postprocess import gaussian_blur_map
from fovea.anomaly._train import train_reconstruction
from fovea.anomaly.vae import ConvDecoder, ConvEncoder, check_input_size, pixel_error_map
from fovea.anomaly.vqgan_losses import FeaturePerceptualLoss, PatchDiscriminator, vqgan_loss
from fovea.errors import ConfigError
from fovea.nn.quantizer import VectorQuantizer


@dataclass
class VQVAEConfig:
    """Model and training knobs. backbone/weights/layers: the perceptual net of the VQGAN option."""

    width: int = 32
    n_down: int = 3                   # latent grid at H / 2^n_down
    embed_dim: int = 32
    num_codes: int = 64
    beta: float = 0.25                # commitment weight (paper)
    ema: bool = True                  # EMA codebook (paper appendix) instead of the codebook loss
    decay: float = 0.99
    dead_code_threshold: float = 1.0  # EMA assignments per batch below which a code is restarted (0 = off)
    score_sigma: float = 4.0
    # what is reconstructed: "pixels" (the image) or "features" (frozen, standardised backbone features of
    # `feature_layers`, upsampled to the first one's grid and concatenated; the map is their error, upsampled)
    target: str = "features"
    feature_layers: tuple[int, ...] = (2, 3)
    # VQGAN option (pixel target)
    gan: bool = False
    perceptual_weight: float = 1.0
    disc_start: int = 100             # optimizer step at which the discriminator switches on
    disc_weight: float = 0.8
    disc_ndf: int = 32
    disc_layers: int = 2
    backbone: str = "efficientnet_lite0"
    weights: str | None = "default"
    layers: tuple[int, ...] = (1, 2)
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
        self.feature_layers = tuple(int(i) for i in self.feature_layers)
        if self.target not in ("pixels", "features"):
            raise ConfigError(f"VQ-VAE target={self.target!r}; use 'pixels' or 'features'")
        if self.gan and self.target != "pixels":
            raise ConfigError("the VQGAN losses (gan=True) need target='pixels'. Fix: add target='pixels'.")
        if min(self.width, self.n_down, self.embed_dim, self.num_codes) < 1:
            raise ConfigError(f"VQ-VAE sizes must be >= 1: width={self.width}, n_down={self.n_down}, "
                              f"embed_dim={self.embed_dim}, num_codes={self.num_codes}")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"VQ-VAE decay={self.decay} must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class VQVAE(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W)) in squared-error units."""

    def __init__(self, config: VQVAEConfig | None = None, **overrides):
        super().__init__()
        self.config = config or VQVAEConfig(**overrides)
        cfg = self.config
        channels = 3
        if cfg.target == "features":
            from fovea.anomaly.features import FeatureExtractor

            self.extractor = FeatureExtractor(cfg.backbone, cfg.feature_layers, cfg.weights)
            channels = sum(self.extractor.channels)
            self.register_buffer("feature_mean", torch.zeros(1, channels, 1, 1))
            self.register_buffer("feature_std", torch.ones(1, channels, 1, 1))
        self.encoder = ConvEncoder(cfg.width, cfg.n_down, cfg.embed_dim, in_channels=channels)
        self.quantizer = VectorQuantizer(cfg.num_codes, cfg.embed_dim, cfg.beta, cfg.ema, cfg.decay,
                                         dead_code_threshold=cfg.dead_code_threshold)
        self.decoder = ConvDecoder(cfg.width, cfg.n_down, cfg.embed_dim, out_channels=channels)
        self.discriminator = PatchDiscriminator(3, cfg.disc_ndf, cfg.disc_layers) if cfg.gan else None
        self.__dict__["perceptual"] = None  # built at fit time (training only, never saved)
        self.__dict__["step"] = 0
        self.__dict__["step_stats"] = []
        self.history: list[dict] = []

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> frozen features (B, C, h, w) of `feature_layers`, upsampled to the first one's grid."""
        with torch.no_grad():
            feats = self.extractor(x)
        size = feats[0].shape[-2:]
        return torch.cat([f if f.shape[-2:] == size else
                          F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats], 1)

    def target_of(self, x: torch.Tensor) -> torch.Tensor:
        """What is reconstructed: the image itself, or its standardised features (B, C, h, w)."""
        if self.config.target == "pixels":
            return x
        return (self.raw_features(x) - self.feature_mean) / self.feature_std

    def reconstruct(self, t: torch.Tensor):
        """target (B, C, h, w) -> (reconstruction (B, C, h, w), QuantizerOutput)."""
        check_input_size(t, self.config.n_down)
        q = self.quantizer(self.encoder(t))
        return self.decoder(q.quantized), q

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """MSE + quantiser loss, or the VQGAN losses with `gan=True`; records usage/perplexity per step."""
        x = self.target_of(x)
        recon, q = self.reconstruct(x)
        cfg = self.config
        if cfg.gan:
            terms = vqgan_loss(x, recon, q.loss, self.step, disc=self.discriminator,
                               last_layer=self.decoder.conv_out.weight, perceptual=self.perceptual,
                               perceptual_weight=cfg.perceptual_weight, disc_start=cfg.disc_start,
                               disc_weight=cfg.disc_weight)
            loss = terms["loss"]
        else:
            loss = F.mse_loss(recon, x) + q.loss
        if self.training:
            self.step += 1
            self.step_stats.append((float(q.perplexity), float(q.usage), int(self.quantizer.restarts)))
        return loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.target_of(x)
        recon, _ = self.reconstruct(t)
        maps = pixel_error_map(t, recon)
        if maps.shape[-2:] != x.shape[-2:]:
            maps = F.interpolate(maps, size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)
        smooth = gaussian_blur_map(maps, self.config.score_sigma)
        return smooth.amax(dim=(1, 2, 3)), maps

    def _build_perceptual(self) -> None:
        from fovea.anomaly.features import FeatureExtractor

        cfg = self.config
        if cfg.gan and cfg.perceptual_weight > 0 and self.perceptual is None:
            self.__dict__["perceptual"] = FeaturePerceptualLoss(FeatureExtractor(cfg.backbone, cfg.layers,
                                                                                 cfg.weights))

    def fit(self, train_loader: Iterable, progress=None):
        """Train on normal images with the engine; history rows gain the epoch's mean codebook perplexity,
        usage and the running count of restarted codes."""
        self._build_perceptual()
        self.step, self.step_stats[:] = 0, []
        batches = [(b["image"] if isinstance(b, dict) else b).detach().float() for b in train_loader]
        if self.config.target == "features" and batches:
            self._fit_feature_statistics(batches)
        result = train_reconstruction(self, batches, lambda m, x: m.loss(x), progress)
        self._merge_codebook_stats()
        return result

    @torch.no_grad()
    def _fit_feature_statistics(self, batches: list[torch.Tensor]) -> None:
        """Per-channel mean and std of the training features (the standardisation of the target)."""
        feats = torch.cat([self.raw_features(b) for b in batches])
        self.feature_mean.copy_(feats.mean(dim=(0, 2, 3), keepdim=True))
        self.feature_std.copy_(feats.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))

    def _merge_codebook_stats(self) -> None:
        if not self.history or not self.step_stats:
            return
        per_epoch = np.array_split(np.asarray(self.step_stats, dtype=float), len(self.history))
        for row, chunk in zip(self.history, per_epoch):
            if len(chunk):
                row.update({"perplexity": float(chunk[:, 0].mean()), "codebook_usage": float(chunk[:, 1].mean()),
                            "restarted_codes": int(chunk[-1, 2])})
