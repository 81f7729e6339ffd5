"""VQGAN training losses (Esser et al. 2021) for the VQ-VAE anomaly model, as an option.

rec = |x - x_hat| + perceptual_weight * feature distance (frozen ImageNet EfficientNet-Lite0
features, channel-normalised; an uncalibrated stand-in, NOT LPIPS, whose VGG weights cannot be
loaded offline); generator term g = -mean D(x_hat) weighted by the adaptive weight
||grad_last rec|| / (||grad_last g|| + 1e-4) (clamped to [0, 1e4], times disc_weight) on the
decoder's last layer, switched on at `disc_start`; discriminator: PatchGAN with hinge loss
1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))).

Deviation from taming: the discriminator uses GroupNorm instead of BatchNorm, and generator and
discriminator share one AdamW step (fovea's engine has one optimizer): the generator term sees the
discriminator through detached parameters and the discriminator term sees a detached x_hat, so each
network receives exactly the gradient of its own loss (Adam's state is per parameter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming `NLayerDiscriminator`): 4x4 stride-2 convs, LeakyReLU 0.2, width doubling up
    to 8x; (B, 3, H, W) -> patch logits (B, 1, h, w). Init N(0, 0.02) convs, N(1, 0.02) norm weights."""

    def __init__(self, in_channels: int = 3, ndf: int = 32, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                       nn.GroupNorm(min(8, ndf * mult), ndf * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """1/2 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))); 1.0 at zero logits."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 1.0) -> torch.Tensor:
    """||d rec / d last|| / (||d g / d last|| + 1e-4), clamped to [0, 1e4], times disc_weight; detached.

    Finite (<= 1e4) even when the generator gradient vanishes."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = g_rec.norm() / (g_gan.norm() + 1e-4)
    return (w.clamp(0.0, 1e4) * disc_weight).detach()


class FeaturePerceptualLoss(nn.Module):
    """Mean squared distance of channel-normalised frozen backbone features, averaged over layers:
    (B, 3, H, W) normalised images x2 -> scalar. The extractor is held outside the module tree (not saved
    with the model; only training needs it)."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.__dict__["extractor"] = extractor

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = self.extractor(x)
        fake = self.extractor(x_hat)
        total = x.new_zeros(())
        for r, f in zip(real, fake):
            total = total + (F.normalize(r, dim=1) - F.normalize(f, dim=1)).pow(2).sum(1).mean()
        return total / len(real)


def generator_logits(disc: nn.Module, x_hat: torch.Tensor) -> torch.Tensor:
    """D(x_hat) with the discriminator's parameters detached: gradients reach x_hat only."""
    params = {k: v.detach() for k, v in disc.named_parameters()}
    params.update(dict(disc.named_buffers()))
    return functional_call(disc, params, (x_hat,))


def vqgan_loss(x: torch.Tensor, x_hat: torch.Tensor, codebook_loss: torch.Tensor, step: int, *,
               disc: nn.Module | None, last_layer: torch.Tensor, perceptual: nn.Module | None = None,
               perceptual_weight: float = 1.0, disc_start: int = 0, disc_weight: float = 1.0,
               codebook_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The generator and discriminator losses of one step, summed into "loss" (see the module docstring).

    x, x_hat (B, 3, H, W); step: the global optimizer step (the GAN terms are 0 while step < disc_start).
    """
    rec = (x - x_hat).abs().mean()
    if perceptual is not None and perceptual_weight > 0:
        rec = rec + perceptual_weight * perceptual(x, x_hat)
    out = {"rec": rec, "codebook": codebook_loss}
    total = rec + codebook_weight * codebook_loss
    if disc is not None and step >= disc_start:
        g = -generator_logits(disc, x_hat).mean()
        w = adaptive_weight(rec, g, last_layer, disc_weight) if torch.is_grad_enabled() else x.new_zeros(())
        d = hinge_d_loss(disc(x.detach()), disc(x_hat.detach()))
        total = total + w * g + d
        out.update({"g": g, "d_weight": w, "d": d})
    out["loss"] = total
    return out
