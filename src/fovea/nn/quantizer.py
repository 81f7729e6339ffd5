"""Vector quantisers: VQ-VAE's nearest-code quantiser (paper loss or EMA codebook) and a
Gumbel-softmax quantiser with hard straight-through sampling.

`VectorQuantizer` follows van den Oord et al. 2017: loss = ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2
with beta = 0.25 on the ENCODER (commitment) term (taming's `legacy=True` puts it on the codebook term;
this one does not), the straight-through estimator z_q = z_e + sg[e - z_e], and the paper's EMA codebook
(gamma = 0.99, Laplace-smoothed cluster sizes) as an option, in which case the loss is the commitment term
only. Dead codes (EMA usage below a threshold) are restarted on encoder outputs of the batch. Codebook
usage and perplexity exp(-sum p log p) of the batch's code histogram are returned with every forward.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QuantizerOutput", "VectorQuantizer", "GumbelQuantizer", "gumbel_tau", "perplexity"]


class QuantizerOutput(NamedTuple):
    """quantized (B, D, H, W) with straight-through gradient; indices (B, H, W) int64; loss = codebook +
    commitment (+ Gumbel KL); perplexity and usage (fraction of codes used) of this batch. In eval mode
    without autograd (inference, export) the losses and statistics are zeros and only the codes are computed."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


def perplexity(onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) code assignments (one-hot or soft) -> (perplexity exp(H(mean p)), fraction of codes used)."""
    p = onehot.float().mean(0)
    entropy = -(p * torch.log(p.clamp_min(1e-10))).sum()
    return torch.exp(entropy), (p > 0).float().mean()


def _flatten(z: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B*H*W, D)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser. forward(z_e (B, D, H, W)) -> QuantizerOutput.

    ema=False: codebook learnt by the codebook loss (paper eq. 3). ema=True: codebook = EMA of assigned
    encoder outputs (decay gamma, Laplace smoothing eps), loss = commitment term only.
    dead_code_threshold > 0: in training, codes whose EMA assignment count (same decay) falls below it
    are replaced by randomly drawn encoder outputs of the batch.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 eps: float = 1e-5, dead_code_threshold: float = 0.0):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes={num_codes}, dim={dim}: both must be >= 1")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay} must be in [0, 1)")
        self.num_codes, self.dim, self.beta = int(num_codes), int(dim), float(beta)
        self.ema, self.decay, self.eps = bool(ema), float(decay), float(eps)
        self.dead_code_threshold = float(dead_code_threshold)
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes),
                                     requires_grad=not ema)
        # EMA statistics: assignment counts (also the dead-code signal) and sums of assigned vectors
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", self.codebook.detach().clone())
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def distances(self, flat: torch.Tensor) -> torch.Tensor:
        """Squared distances (N, K) of flat vectors (N, D) to every code: |z|^2 + |e|^2 - 2 z.e."""
        e = self.codebook
        return (flat * flat).sum(1, keepdim=True) + (e * e).sum(1)[None] - 2.0 * flat @ e.t()

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        if d != self.dim:
            raise ValueError(f"quantizer expects {self.dim} channels, got input of shape {tuple(z.shape)}")
        flat = _flatten(z)
        idx = self.distances(flat.detach()).argmin(1)
        onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)
        e = self.codebook[idx].clone()  # the codes the assignment was made with (before any update)
        if not (self.training or torch.is_grad_enabled()):  # inference / export: the codes only
            zero = flat.new_zeros(())
            return QuantizerOutput(e.reshape(b, h, w, d).permute(0, 3, 1, 2), idx.reshape(b, h, w), zero, zero,
                                   zero, zero, zero)
        if self.training and self.ema:
            self._ema_update(flat.detach(), onehot)
        if self.training and self.dead_code_threshold > 0:
            self._track_usage(onehot)
            self._restart_dead(flat.detach())
        commitment = self.beta * F.mse_loss(flat, e.detach())
        codebook = flat.new_zeros(()) if self.ema else F.mse_loss(e, flat.detach())
        q = flat + (e - flat).detach()  # straight-through: d q / d z_e = identity
        quantized = q.reshape(b, h, w, d).permute(0, 3, 1, 2)
        ppl, usage = perplexity(onehot)
        return QuantizerOutput(quantized, idx.reshape(b, h, w), codebook + commitment, codebook, commitment,
                               ppl, usage)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        """cluster_size <- g cs + (1-g) n_k; embed_sum <- g es + (1-g) sum_i onehot_ik z_i;
        codebook = embed_sum / Laplace-smoothed cluster_size (paper appendix A.1)."""
        g = self.decay
        self.cluster_size.mul_(g).add_(onehot.sum(0), alpha=1 - g)
        self.embed_sum.mul_(g).add_(onehot.t() @ flat, alpha=1 - g)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
        self.codebook.data.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _track_usage(self, onehot: torch.Tensor) -> None:
        if not self.ema:  # with EMA, cluster_size is already this statistic
            self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        """Codes with EMA count < threshold get a random batch vector; their count is reset to the threshold."""
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        self.codebook.data[dead] = flat[pick]
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_sum[dead] = flat[pick] * self.dead_code_threshold
        self.restarts += n_dead


def gumbel_tau(step: int, tau_start: float = 1.0, tau_min: float = 0.5, rate: float = 1e-4) -> float:
    """Exponential temperature anneal max(tau_min, tau_start * exp(-rate * step)) (DALL-E / taming style)."""
    return max(float(tau_min), float(tau_start) * math.exp(-float(rate) * int(step)))


class GumbelQuantizer(nn.Module):
    """Gumbel-softmax quantiser. forward(z (B, C_in, H, W)) -> QuantizerOutput.

    logits (B, K, H, W) = 1x1 conv(z); in training, y = softmax((logits + Gumbel noise) / tau) over codes and,
    with hard=True, the straight-through one-hot onehot(argmax y) - sg[y] + y (one-hot forward, soft
    gradient); in eval, the argmax code. quantized = sum_k y_k e_k. loss = kl_weight * KL(q || uniform)
    with q = softmax(logits), averaged over positions (reported as `codebook_loss`; commitment is zero).
    """

    def __init__(self, in_channels: int, num_codes: int, dim: int, tau: float = 1.0, hard: bool = True,
                 kl_weight: float = 5e-4):
        super().__init__()
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.tau, self.hard, self.kl_weight = float(tau), bool(hard), float(kl_weight)
        self.proj = nn.Conv2d(in_channels, num_codes, 1)
        self.codebook = nn.Embedding(num_codes, dim)

    def sample(self, logits: torch.Tensor, gumbels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, H, W) logits -> code weights (B, K, H, W): Gumbel-softmax (hard ST if `hard`)."""
        if gumbels is None:
            u = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
            gumbels = -torch.log(-torch.log(u))
        soft = torch.softmax((logits + gumbels) / self.tau, dim=1)
        if not self.hard:
            return soft
        hard = F.one_hot(soft.argmax(1), self.num_codes).permute(0, 3, 1, 2).to(soft.dtype)
        return hard - soft.detach() + soft

    def forward(self, z: torch.Tensor, gumbels: torch.Tensor | None = None) -> QuantizerOutput:
        logits = self.proj(z)
        if self.training:
            weights = self.sample(logits, gumbels)
        else:
            weights = F.one_hot(logits.argmax(1), self.num_codes).permute(0, 3, 1, 2).to(logits.dtype)
        quantized = torch.einsum("bkhw,kd->bdhw", weights, self.codebook.weight)
        q = torch.softmax(logits, dim=1)
        kl = self.kl_weight * (q * torch.log(q * self.num_codes + 1e-10)).sum(1).mean()
        idx = weights.argmax(1)
        ppl, usage = perplexity(F.one_hot(idx.reshape(-1), self.num_codes))
        return QuantizerOutput(quantized, idx, kl, kl, kl.new_zeros(()), ppl, usage)
