"""TSM (Lin et al., ICCV 2019): zero-cost temporal shift inside a 2D network, offline and online.

`TemporalShift` wraps the first convolution of every residual branch (MMAction2's "blockres";
the identity path stays unshifted). Offline (bidirectional, MMAction2/TSM repo): of C channels,
[0, C/8) take frame t+1, [C/8, C/4) frame t-1, zeros at the clip ends. Causal (the TSM online
demo): [0, C/8) take frame t-1 only, so a stream can run it one frame at a time: in online mode
each shift keeps the previous frame's first C/8 channels as a cache and a new frame costs one 2D
forward (`OnlineTSM`). TSM-R50: 24.33 M parameters (400 classes), 32.70 GMACs at 8x224^2.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fovea.errors import ConfigError
from fovea.models.video._registry import register_video_model
from fovea.models.video.tsn import Lite0Trunk, Recognizer2d, ResNetTrunk

SHIFT_MODES = ("bidirectional", "causal")


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8,
                   mode: str = "bidirectional") -> torch.Tensor:
    """Shift channel groups along time. x (B*T, C, H, W) -> same shape."""
    bt, c, h, w = x.shape
    t = num_segments
    x = x.view(bt // t, t, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    if mode == "bidirectional":
        out[:, :-1, :fold] = x[:, 1:, :fold]                       # from the future frame
        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]       # from the past frame
        out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    else:
        out[:, 1:, :fold] = x[:, :-1, :fold]
        out[:, :, fold:] = x[:, :, fold:]
    return out.view(bt, c, h, w)


class TemporalShift(nn.Module):
    """Shift, then the wrapped layer. Offline input (B*T, C, H, W); online input one frame (B, C, H, W)."""

    def __init__(self, net: nn.Module, num_segments: int, shift_div: int = 8, mode: str = "bidirectional"):
        super().__init__()
        if mode not in SHIFT_MODES:
            raise ConfigError(f"TSM shift mode={mode!r}; use one of {SHIFT_MODES}")
        self.net, self.num_segments, self.shift_div, self.mode = net, num_segments, shift_div, mode
        self.online = False
        self.cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.online:
            return self.net(temporal_shift(x, self.num_segments, self.shift_div, self.mode))
        fold = x.shape[1] // self.shift_div
        prev = self.cache if self.cache is not None and self.cache.shape[0] == x.shape[0] else \
            torch.zeros_like(x[:, :fold])
        self.cache = x[:, :fold].detach().clone()
        return self.net(torch.cat([prev, x[:, fold:]], dim=1))


def insert_shifts(backbone: nn.Module, num_segments: int, shift_div: int = 8, mode: str = "bidirectional") -> int:
    """Wrap the first conv of every residual branch (ResNet `conv1` of a bottleneck, timm
    InvertedResidual `conv_pw` when it has a skip) in a TemporalShift; returns how many."""
    count = 0
    for m in list(backbone.modules()):
        if type(m).__name__ == "Bottleneck" and hasattr(m, "conv1") and not isinstance(m.conv1, TemporalShift):
            m.conv1 = TemporalShift(m.conv1, num_segments, shift_div, mode)
            count += 1
        elif type(m).__name__ == "InvertedResidual" and getattr(m, "has_skip", False) \
                and not isinstance(m.conv_pw, TemporalShift):
            m.conv_pw = TemporalShift(m.conv_pw, num_segments, shift_div, mode)
            count += 1
    return count


class TSM(Recognizer2d):
    """Recognizer2d whose trunk has temporal shifts; `shift_mode="causal"` allows `OnlineTSM`."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_segments: int = 8, shift_div: int = 8,
                 shift_mode: str = "bidirectional", dropout: float = 0.5, features_only: bool = False):
        super().__init__(backbone, num_classes, dropout, features_only)
        self.num_segments, self.shift_mode = num_segments, shift_mode
        self.num_shifts = insert_shifts(backbone, num_segments, shift_div, shift_mode)

    def frame_maps(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.num_segments:
            self.set_num_segments(x.shape[2])
        return super().frame_maps(x)

    def set_num_segments(self, t: int) -> None:
        """Shift over clips of t frames (the shift itself has no parameters)."""
        self.num_segments = t
        for m in self.modules():
            if isinstance(m, TemporalShift):
                m.num_segments = t


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d into the Conv2d registered just before it (a TemporalShift's
    wrapped conv counts: the shift acts on the conv's input), in place; timm's BatchNormAct2d leaves
    its activation behind. Relies on conv -> BN being consecutive children, as in torchvision's
    ResNet and timm's EfficientNet blocks. Returns the number of folded pairs. Inference only."""
    count = 0
    kids = list(module.named_children())
    for (_, a), (name_b, b) in zip(kids, kids[1:]):
        conv = a.net if isinstance(a, TemporalShift) else a
        if type(conv) is not nn.Conv2d or not isinstance(b, nn.BatchNorm2d) or b.running_var is None:
            continue
        with torch.no_grad():
            scale = b.weight / torch.sqrt(b.running_var + b.eps)
            bias = b.bias - b.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias)
        rest = [m for m in (getattr(b, "drop", None), getattr(b, "act", None)) if m is not None]
        setattr(module, name_b, nn.Sequential(*rest) if rest else nn.Identity())
        count += 1
    for child in module.children():
        count += fold_batchnorm(child)
    return count


class OnlineTSM(nn.Module):
    """Streams a causal TSM one frame at a time with cached shifted channels.

    step(frame (B, C, H, W)) -> per-frame pooled features (B, F) equal to those of the offline
    causal model on the whole clip so far; `logits(window)` averages the last `window` frames'
    features before the classifier (TSN consensus). Call `reset()` between streams.
    `fold_bn=True` streams a copy with BatchNorm folded into the convolutions and `channels_last`
    a copy in channels-last memory (same features up to float rounding, less CPU per frame:
    benchmarks/video.py --part online); the given model is left untouched."""

    def __init__(self, tsm: TSM, *, fold_bn: bool = False, channels_last: bool = False):
        super().__init__()
        if tsm.shift_mode != "causal":
            raise ConfigError("OnlineTSM needs a TSM built with shift_mode='causal' (a bidirectional shift "
                              "looks one frame ahead). Fix: train/build it with shift_mode='causal'.")
        if fold_bn or channels_last:
            tsm = copy.deepcopy(tsm).eval()
            if fold_bn:
                fold_batchnorm(tsm)
            if channels_last:
                tsm = tsm.to(memory_format=torch.channels_last)
        self.tsm, self.channels_last = tsm, channels_last
        self.shifts = [m for m in tsm.modules() if isinstance(m, TemporalShift)]
        self.history: list[torch.Tensor] = []

    def reset(self) -> None:
        for m in self.shifts:
            m.cache = None
        self.history.clear()

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        for m in self.shifts:
            m.online = True
        if self.channels_last:
            frame = frame.contiguous(memory_format=torch.channels_last)
        try:
            feat = self.tsm.backbone(frame).mean(dim=(2, 3))
        finally:
            for m in self.shifts:
                m.online = False
        self.history.append(feat)
        del self.history[:-64]
        return feat

    @torch.no_grad()
    def logits(self, window: int = 8) -> torch.Tensor:
        """(B, K) from the mean of the last `window` per-frame features."""
        return self.tsm.fc(torch.stack(self.history[-window:], dim=1).mean(dim=1))


def build_tsm_resnet50(num_classes: int = 400, *, num_segments: int = 8, shift_div: int = 8,
                       shift_mode: str = "bidirectional", dropout: float = 0.5, features_only: bool = False,
                       in_channels: int = 3) -> TSM:
    return TSM(ResNetTrunk(in_channels), num_classes, num_segments, shift_div, shift_mode, dropout, features_only)


@register_video_model
def tsm_r50(*, num_classes: int = 400, **kwargs) -> TSM:
    """TSM-R50, MMAction2 `tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb` (random init)."""
    return build_tsm_resnet50(num_classes, **kwargs)


@register_video_model
def tsm_lite0(*, num_classes: int = 400, num_segments: int = 8, shift_div: int = 8, shift_mode: str = "causal",
              dropout: float = 0.2, weights: str | None = "default", features_only: bool = False,
              in_channels: int = 3) -> TSM:
    """TSM on the offline ImageNet EfficientNet-Lite0 (causal shift by default: it streams online)."""
    return TSM(Lite0Trunk(weights, in_channels), num_classes, num_segments, shift_div, shift_mode, dropout,
               features_only)
