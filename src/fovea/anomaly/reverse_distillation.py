"""Reverse Distillation (Deng & Li, "Anomaly Detection via Reverse Distillation from One-Class
Embedding", CVPR 2022).

A frozen pretrained encoder (teacher) gives multi-scale features of normal images; a trainable
one-class bottleneck embedding (OCBE: multi-scale feature fusion + a strided residual "OCE"
block) compresses them; a student decoder mirrors the encoder stages in reverse and must rebuild
the teacher's features from that embedding. Loss and anomaly map are 1 - cosine similarity
between teacher and student features per position; the maps of all scales are upsampled to the
input and summed (or multiplied). The image score is the maximum of the Gaussian-smoothed map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fovea.anomaly._train import train_reconstruction
from fovea.anomaly.features import FeatureExtractor
from fovea.anomaly.postprocess import gaussian_blur_map
from fovea.errors import ConfigError


@dataclass
class ReverseDistillationConfig:
    """Model and training knobs. layers: teacher feature indices (timm), shallow to deep."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[int, ...] = (1, 2, 3)
    weights: str | None = "default"
    embed_dim: int = 256              # channels of the one-class embedding
    decoder_blocks: int = 2           # residual blocks per student stage
    decoder_width: float = 2.0        # student stage width = decoder_width * teacher channels
    map_mode: str = "sum"             # "sum" (paper) | "product" of the per-scale maps
    score_sigma: float = 4.0          # Gaussian smoothing of the map before its max = image score
    # training (with fovea.engine.train.fit)
    epochs: int = 20
    batch_size: int = 8
    lr: float = 0.005
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    out_dir: str | None = None        # engine checkpoints + loss curve; None = a temporary folder

    def __post_init__(self) -> None:
        self.layers = tuple(int(i) for i in self.layers)
        if len(self.layers) < 2:
            raise ConfigError(f"reverse distillation needs >= 2 teacher layers, got {self.layers}")
        if self.map_mode not in ("sum", "product"):
            raise ConfigError(f"map_mode={self.map_mode!r}; use 'sum' or 'product'")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------- blocks
def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Basic residual block; resample=-1 halves H, W (stride-2 conv), +1 doubles them (2x2 deconv)."""

    def __init__(self, cin: int, cout: int, resample: int = 0):
        super().__init__()
        if resample > 0:
            first: nn.Module = nn.ConvTranspose2d(cin, cout, 2, 2, bias=False)
            short: nn.Module = nn.ConvTranspose2d(cin, cout, 2, 2, bias=False)
        else:
            stride = 2 if resample < 0 else 1
            first = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            short = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else nn.Identity()
        self.conv1 = nn.Sequential(first, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.conv2 = conv_bn(cout, cout, act=False)
        self.shortcut = short if isinstance(short, nn.Identity) else nn.Sequential(short, nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class OneClassBottleneck(nn.Module):
    """OCBE: multi-scale feature fusion (each scale strided down to the deepest one, concatenated,
    1x1-fused) followed by the one-class embedding block (residual, stride 2).

    forward(list of (B, C_k, H / r_k, W / r_k)) -> (B, embed_dim, H / 2r_K, W / 2r_K).
    """

    def __init__(self, channels: Sequence[int], reductions: Sequence[int], embed_dim: int):
        super().__init__()
        deep_c, deep_r = channels[-1], reductions[-1]
        branches = []
        for c, r in zip(channels, reductions):
            steps, cin, mods = 0, c, []
            while r * 2 ** steps < deep_r:
                mods.append(conv_bn(cin, deep_c, 3, 2))
                cin, steps = deep_c, steps + 1
            if not mods:
                mods.append(conv_bn(c, deep_c, 1))
            branches.append(nn.Sequential(*mods))
        self.fuse_branches = nn.ModuleList(branches)
        self.fuse = conv_bn(deep_c * len(channels), embed_dim, 1)
        self.oce = ResidualBlock(embed_dim, embed_dim, resample=-1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fused = torch.cat([b(f) for b, f in zip(self.fuse_branches, feats)], 1)
        return self.oce(self.fuse(fused))


class StudentDecoder(nn.Module):
    """Mirror of the encoder: one upsampling stage per teacher scale, deepest first.

    forward((B, E, h, w)) -> student features listed shallow to deep like the teacher's.
    """

    def __init__(self, embed_dim: int, channels: Sequence[int], blocks: int, width: float):
        super().__init__()
        stages, heads = [], []
        cin = embed_dim
        for c in reversed(list(channels)):
            hidden = max(16, int(round(c * width)))
            mods = [ResidualBlock(cin, hidden, resample=1)]
            mods += [ResidualBlock(hidden, hidden) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*mods))
            heads.append(nn.Conv2d(hidden, c, 1))  # linear output: teacher features may be negative
            cin = hidden
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage, head in zip(self.stages, self.heads):
            z = stage(z)
            outs.append(head(z))
        return outs[::-1]


# ------------------------------------------------------------------------- loss and maps
def cosine_distance_map(teacher: torch.Tensor, student: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - cosine similarity over channels: (B, C, h, w) x2 -> (B, 1, h, w), in [0, 2]."""
    dot = (teacher * student).sum(1, keepdim=True)
    norm = teacher.norm(dim=1, keepdim=True) * student.norm(dim=1, keepdim=True)
    return 1.0 - dot / norm.clamp_min(eps)


def reverse_distillation_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]) -> torch.Tensor:
    """Paper eq. 2-3: sum over scales of the mean (over positions and batch) cosine distance."""
    if len(teacher) != len(student):
        raise ValueError(f"{len(teacher)} teacher scales but {len(student)} student scales")
    return sum(cosine_distance_map(t, s).mean() for t, s in zip(teacher, student))


def anomaly_map(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size,
                mode: str = "sum") -> torch.Tensor:
    """Per-scale cosine-distance maps upsampled (bilinear) to `size` and summed or multiplied: (B, 1, H, W)."""
    out = None
    for t, s in zip(teacher, student):
        m = F.interpolate(cosine_distance_map(t, s), size=size, mode="bilinear", align_corners=False)
        out = m if out is None else (out + m if mode == "sum" else out * m)
    return out


# ------------------------------------------------------------------------------- model
class ReverseDistillation(nn.Module):
    """forward(x (B, 3, H, W) normalised) -> (scores (B,), maps (B, 1, H, W)) in cosine-distance units."""

    def __init__(self, config: ReverseDistillationConfig | None = None, **overrides):
        super().__init__()
        self.config = config or ReverseDistillationConfig(**overrides)
        cfg = self.config
        self.extractor = FeatureExtractor(cfg.backbone, cfg.layers, cfg.weights)  # frozen teacher
        self.bottleneck = OneClassBottleneck(self.extractor.channels, self.extractor.reductions, cfg.embed_dim)
        self.decoder = StudentDecoder(cfg.embed_dim, self.extractor.channels, cfg.decoder_blocks, cfg.decoder_width)
        self.history: list[dict] = []

    def teacher_student(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher features (no grad) and the student's reconstruction of them, shallow to deep."""
        with torch.no_grad():
            teacher = self.extractor(x)
        student = self.decoder(self.bottleneck(teacher))
        return teacher, student

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        teacher, student = self.teacher_student(x)
        return reverse_distillation_loss(teacher, student)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        teacher, student = self.teacher_student(x)
        maps = anomaly_map(teacher, student, x.shape[-2:], self.config.map_mode)
        smooth = gaussian_blur_map(maps, self.config.score_sigma)
        return smooth.amax(dim=(1, 2, 3)), maps

    def fit(self, train_loader: Iterable, progress=None):
        """Train bottleneck + student on normal images with `fovea.engine.train.fit` (teacher frozen).

        train_loader yields dicts with "image" (B, 3, H, W) normalised, or such tensors; it is read
        once into memory, then the engine runs `config.epochs` epochs over it. progress(done, total)
        is called after every epoch. Returns the engine's `TrainResult` (history = the loss curve; its
        file paths exist only when `config.out_dir` is set, else they were in a removed temporary folder).
        """
        # bottleneck + student train; the teacher stays in eval mode (FeatureExtractor)
        return train_reconstruction(self, train_loader, lambda m, x: m.loss(x), progress)
