"""Manipulation-localisation networks and the forgery task's pipeline.

`ForgeryPipeline(images uint8 (B, H, W, 3))` resizes to the input size, normalises (ImageNet) and
runs the network: manipulation logits (B, 1, h, w), the training graph (BCE with logits, as the
SparseViT paper trains). Its post-process upsamples the logits to (H, W) and applies
sigmoid(logit - logit_threshold), so predictors and TorchScript/ONNX exports answer with a
per-pixel manipulation score (B, 1, H, W) whose 0.5 is the decision threshold: the network's
probability itself while `logit_threshold` is 0 (the default), else the score normalised so
that 0.5 = the threshold chosen on validation data (`set_threshold`; like the anomaly task's maps).

Networks (`ForgeryModelConfig.arch`):
- "sparsevit": `fovea.models.sparsevit.SparseViT` with any config; `SPARSEVIT_SMALL` is the reduced
  one fovea trains on a CPU (UniFormer layout at half width, depths 2-2-8-2, the paper's sparsity
  schedule compressed to 8 stage-3 blocks (S = 8, 8, 4, 4, 2, 2, 1, 1) and 2 stage-4 blocks
  (S = 2, 1), LFF over the same 6 taps): 3.67 M parameters, 0.76 GMACs at 256 x 256.
- "unet": a plain UNet baseline (two 3x3 conv-BN-ReLU per level, max-pool down, bilinear up +
  skip concatenation) behind a patchify stem (conv k = stride = `stem_stride`, as SparseViT's
  first patch embedding), logits bilinearly upsampled to the input; `UNET_SMALL` (stem 4, widths
  32-64-128-192-256: 3.69 M parameters) is about SPARSEVIT_SMALL's parameter count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fovea.engine.pipeline import TaskPipeline
from fovea.errors import ConfigError
from fovea.models.sparsevit import SparseViT, SparseViTConfig

CLASS_NAMES = ("authentic", "manipulated")
ARCHS = ("sparsevit", "unet")
SPARSEVIT_SMALL: dict[str, Any] = {
    "depths": [2, 2, 8, 2], "dims": [32, 64, 128, 256], "head_dim": 32,
    "stage3_sparse": [8, 8, 4, 4, 2, 2, 1, 1], "stage4_sparse": [2, 1],
    "stage3_taps": [2, 4, 6], "stage4_taps": [1], "drop_path_rate": 0.1,
}
UNET_SMALL: dict[str, Any] = {"widths": [32, 64, 128, 192, 256], "stem_stride": 4}


@dataclass
class ForgeryModelConfig:
    """arch: "sparsevit" | "unet"; net: the architecture's keyword overrides (SparseViTConfig fields, or
    UNet `widths`), JSON-able; input_size: (h, w) the network sees (SparseViT: multiples of 128)."""

    arch: str = "sparsevit"
    net: dict[str, Any] = field(default_factory=lambda: dict(SPARSEVIT_SMALL))
    input_size: tuple[int, int] = (256, 256)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown forgery network {self.arch!r}. Fix: choose from {list(ARCHS)}.")
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.arch == "sparsevit" and (self.input_size[0] % 128 or self.input_size[1] % 128):
            raise ConfigError(f"SparseViT needs an input size that is a multiple of 128, got {self.input_size}. "
                              "Fix: use e.g. 128 x 128 or 256 x 256.")
        if self.arch == "unet":
            m = int(self.net.get("stem_stride", 4)) * 2 ** (len(self.net.get("widths", UNET_SMALL["widths"])) - 1)
            if self.input_size[0] % m or self.input_size[1] % m:
                raise ConfigError(f"this UNet needs an input size that is a multiple of {m}, got {self.input_size}.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["net"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.net.items()}
        return d


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Plain UNet: (B, 3, H, W) -> logits (B, 1, H, W). A stem conv (k = stride = stem_stride, 1 = none),
    then len(widths) levels; H and W multiples of stem_stride * 2^(levels-1)."""

    def __init__(self, widths=(32, 64, 128, 192, 256), stem_stride: int = 4):
        super().__init__()
        w = [int(v) for v in widths]
        self.stem = nn.Conv2d(3, w[0], stem_stride, stride=stem_stride) if stem_stride > 1 else None
        first = w[0] if self.stem is not None else 3
        self.down = nn.ModuleList(nn.Sequential(_conv_bn_relu(c_in, c), _conv_bn_relu(c, c))
                                  for c_in, c in zip([first] + w[:-1], w))
        self.up = nn.ModuleList(nn.Sequential(_conv_bn_relu(w[i + 1] + w[i], w[i]), _conv_bn_relu(w[i], w[i]))
                                for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.stem is not None:
            x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in range(len(self.up) - 1, -1, -1):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


def build_network(config: ForgeryModelConfig) -> nn.Module:
    """The configured network, random init: (B, 3, h, w) normalised -> logits (B, 1, h, w)."""
    if config.arch == "unet":
        return UNet(**config.net)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in config.net.items()}
    try:
        return SparseViT(SparseViTConfig(**kw))
    except TypeError as exc:
        raise ConfigError(f"bad SparseViT settings {sorted(config.net)}: {exc}. Fix: use SparseViTConfig's "
                          "fields (depths, dims, head_dim, stage3_sparse, ...).") from exc


class ForgeryPipeline(TaskPipeline):
    """uint8 images (B, H, W, 3) -> logits (B, 1, h, w); post-processed: manipulation probability (B, 1, H, W)."""

    task = "forgery"
    output_names = ("manipulation_prob",)

    def __init__(self, network: nn.Module, config: ForgeryModelConfig):
        super().__init__(network, config.input_size)
        self.model_config = config
        self.register_buffer("logit_threshold", torch.zeros(()))

    def set_threshold(self, probability: float) -> None:
        """Make `probability` of the network the 0.5 of the answer (0 < probability < 1)."""
        if not 0.0 < probability < 1.0:
            raise ConfigError(f"decision threshold {probability} must be inside (0, 1).")
        self.logit_threshold.fill_(float(torch.logit(torch.tensor(float(probability), dtype=torch.float64))))

    def postprocess(self, outputs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        logits = F.interpolate(outputs, size=[height, width], mode="bilinear", align_corners=False)
        return torch.sigmoid(logits - self.logit_threshold)

    def config(self) -> dict[str, Any]:
        return self.model_config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ForgeryPipeline":
        cfg = ForgeryModelConfig(**config)
        return cls(build_network(cfg), cfg)


def build_pipeline(arch: str = "sparsevit", input_size: tuple[int, int] = (256, 256),
                   net: dict[str, Any] | None = None) -> ForgeryPipeline:
    """A random-init forgery pipeline; net defaults to SPARSEVIT_SMALL / UNET_SMALL."""
    if net is None:
        net = dict(SPARSEVIT_SMALL if arch == "sparsevit" else UNET_SMALL)
    return ForgeryPipeline.from_config(ForgeryModelConfig(arch, net, input_size).to_dict())
