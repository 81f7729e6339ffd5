"""PaDiM (Defard et al., ICPR-W 2020): a Gaussian per patch position.

Features of three stages are upsampled to the finest one and concatenated; `n_features` of the
channels are kept (`channel_rule`, below); at each position a mean and a covariance (+ eps * I) are fitted on
normal images. The map is the Mahalanobis distance of each test patch to its position's Gaussian,
upsampled to the input; the image score is the maximum of that map after Gaussian smoothing
(sigma 4, as the paper smooths its maps; Anomalib scores the same way; `score_sigma=0` gives the
unsmoothed maximum). Over five channel-subset seeds the smoothed maximum scored higher on the
brick and gravel texture sets and lower on grass (`benchmarks/padim_seeds.py`).

Channel rules (`channel_rule`):
- "low_variance" (default): the `n_features` channels with the smallest variance over the normal
  training images, averaged over positions (the within-position variance that the Gaussians model),
  computed on the first `rule_images` training images. Normal data barely use them, so an anomaly
  that does stands out (cf. Rippel et al. 2020: the least-variance principal components of normal
  features separated anomalies best). No draw: the same data give the same channels. On the brick,
  grass and gravel texture sets it scored image AUROC 1.000 / 0.750 / 0.646 against 0.952 / 0.719 /
  0.619 for the mean over Anomalib's draws of seeds 0-4 (`docs/benchmarks/padim_seeds.md`; 20 test
  images per set, and the rule was chosen on these sets).
- "variance": the `n_features` channels with the largest such variance (0.906 / 0.635 / 0.646 there).
- "stride": every (C / n_features)-th channel of the concatenation (evenly spaced, data-free).
- "random": the paper's and Anomalib's random subset, drawn with `seed` (checkpoints written
  before the option existed load with this rule; their subset is a saved buffer either way).
`benchmarks/padim_seeds.py` measures the three against several random seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly.features import FeatureExtractor
from fovea.anomaly.postprocess import gaussian_blur_map
from fovea.errors import ConfigError

CHANNEL_RULES = ("variance", "low_variance", "stride", "random")


@dataclass
class PadimConfig:
    backbone: str = "efficientnet_lite0"
    layers: tuple[int, ...] = (1, 2, 3)
    n_features: int = 100
    covariance_eps: float = 0.01
    score_sigma: float = 4.0   # Gaussian smoothing of the map before its max = image score (0 = raw max)
    seed: int = 0
    weights: str | None = "default"
    channel_rule: str = "low_variance"  # "low_variance" | "variance" | "stride" | "random" (module docstring)
    rule_images: int = 32           # training images the variance rule looks at (the first ones)

    # options missing from older checkpoints: they were fitted (and thresholded) on the raw max, with a
    # random channel subset
    SAVED_DEFAULTS: ClassVar[dict] = {"score_sigma": 0.0, "channel_rule": "random"}

    def to_dict(self) -> dict:
        return asdict(self)


class Padim(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W)) in Mahalanobis units."""

    def __init__(self, config: PadimConfig | None = None, **overrides):
        super().__init__()
        self.config = config or PadimConfig(**overrides)
        self.extractor = FeatureExtractor(self.config.backbone, self.config.layers, self.config.weights)
        if self.config.channel_rule not in CHANNEL_RULES:
            raise ConfigError(f"PaDiM channel_rule {self.config.channel_rule!r} is unknown. "
                              f"Fix: use one of {list(CHANNEL_RULES)}.")
        total = sum(self.extractor.channels)
        n = min(self.config.n_features, total)
        if self.config.channel_rule == "random":
            gen = torch.Generator().manual_seed(self.config.seed)
            index = torch.randperm(total, generator=gen)[:n].sort().values
        elif self.config.channel_rule == "stride":
            index = torch.linspace(0, total - 1, n).round().long().unique()
        else:  # "variance", "low_variance": chosen from the training images in `fit`; all-channel placeholder until then
            index = torch.arange(n)
        self.register_buffer("channel_index", index)
        self.register_buffer("mean", torch.zeros(0, n))  # (P, d)
        self.register_buffer("inv_covariance", torch.zeros(0, n, n))  # (P, d, d)

    def all_channels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w) every channel of the stages, upsampled to the finest one."""
        feats = self.extractor(x)
        size = feats[0].shape[-2:]
        feats = [feats[0]] + [F.interpolate(f, size=size, mode="nearest") for f in feats[1:]]
        return torch.cat(feats, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, d, h, w) the chosen channel subset of the concatenated stages."""
        return self.all_channels(x).index_select(1, self.channel_index)

    def _embeddings(self, batches: Iterable[torch.Tensor | dict]):
        """Yield (B, d, h, w) training embeddings. With the variance rule the first `rule_images` images
        are held (all channels) until the channels are chosen from them (`choose_by_variance`)."""
        held, count = [], 0
        for batch in batches:
            x = batch["image"] if isinstance(batch, dict) else batch
            if not self.config.channel_rule.endswith("variance"):
                yield self.embed(x)
                continue
            e = self.all_channels(x)
            if held is None:
                yield e.index_select(1, self.channel_index)
                continue
            held.append(e)
            count += e.shape[0]
            if count >= self.config.rule_images:
                yield from self._release(held)
                held = None
        if held:
            yield from self._release(held)

    def _release(self, held: list[torch.Tensor]):
        self.channel_index = choose_by_variance(torch.cat(held), self.config.n_features,
                                                largest=self.config.channel_rule == "variance")
        for e in held:
            yield e.index_select(1, self.channel_index)

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor | dict], progress=None) -> None:
        """Per-position mean and inverse covariance from normal images, accumulated in float64.

        Memory: one float64 (P, d, d) accumulator updated in place (batched matmul), turned into the
        covariance in place, inverted in blocks of positions into the float32 result; no (P, d, d)
        temporaries beyond those two.
        """
        self.eval()
        total = None
        outer = None
        count = 0
        for e in self._embeddings(batches):
            e = e.double()  # (B, d, h, w)
            b, d, h, w = e.shape
            e = e.permute(2, 3, 1, 0).reshape(h * w, d, b)  # (P, d, B)
            if outer is None:
                total = torch.zeros(h * w, d, dtype=torch.float64)
                outer = torch.zeros(h * w, d, d, dtype=torch.float64)
            total += e.sum(2)
            outer.baddbmm_(e, e.transpose(1, 2))  # += sum over the batch of x x^T, per position
            count += b
        if count < 2:
            raise ValueError(f"PaDiM.fit needs at least 2 training images, got {count}")
        mean = total / count
        # covariance in place: (sum x x^T - n mean mean^T) / (n - 1) + eps I
        cov = outer.baddbmm_(mean[:, :, None], mean[:, None, :], alpha=-float(count)).div_(count - 1)
        cov.diagonal(dim1=-2, dim2=-1).add_(self.config.covariance_eps)
        inv = torch.empty(cov.shape, dtype=torch.float32)
        block = 256
        for start in range(0, cov.shape[0], block):
            inv[start:start + block] = torch.linalg.inv(cov[start:start + block])
        self.mean = mean.float()
        self.inv_covariance = inv

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(x)
        b, d, h, w = e.shape
        # contiguous (B, P, d): for B = 1 the permuted view keeps a channel-major layout, and the
        # batched product below then runs at half speed (28 vs 15 ms at 256 px, 1 thread)
        delta = e.permute(0, 2, 3, 1).reshape(b, h * w, d).contiguous() - self.mean[None]  # (B, P, d)
        m = torch.einsum("bpi,pij,bpj->bp", delta, self.inv_covariance, delta).clamp_min(0).sqrt()
        maps = F.interpolate(m.reshape(b, 1, h, w), size=x.shape[-2:], mode="bilinear", align_corners=False)
        smooth = gaussian_blur_map(maps, self.config.score_sigma)
        return smooth.amax(dim=(1, 2, 3)), maps


def choose_by_variance(embeddings: torch.Tensor, n: int, largest: bool = True) -> torch.Tensor:
    """(N, C, h, w) normal embeddings -> sorted indices (min(n, C),) of the channels with the largest
    (largest=False: smallest) variance over the N images, averaged over the h * w positions (ties:
    lower index first)."""
    e = embeddings.double().flatten(2)                               # (N, C, P)
    var = e.var(dim=0, unbiased=embeddings.shape[0] > 1).mean(1)     # (C,)
    sign = -1.0 if largest else 1.0
    order = sorted(range(var.numel()), key=lambda c: (sign * float(var[c]), c))
    return torch.tensor(sorted(order[:n]), dtype=torch.long)
