"""Frame-level temporal localization: per-frame features of a causal TSM over a whole video, a
small temporal convolution head trained on frame labels, and actionness grouping into segments.

Sliding clip windows (`fovea.video.localize.frame_probabilities`) give every frame the label of a
1.6 s window, which blurs event boundaries; here every frame gets its own prediction:

1. `frame_features`: the causal TSM (trained on clips, frozen) runs over the whole video as
   `stride` interleaved streams (frames p, p + stride, ... with the clip training's frame spacing),
   giving per-frame pooled features (N, F), exactly what the online recognizer computes frame by
   frame. Long videos run in chunks with `tsm.num_shifts` frames of warm-up: a causal shift reaches
   one step back per shifted layer, so chunked features equal whole-video ones.
2. `TemporalConvHead`: (B, T, F) -> (B, T, K) per-frame logits, dilated 1D convolutions looking
   both ways in time (offline localization), trained with cross-entropy on `frame_labels` of
   generated long videos (`FrameLabelTask` on the shared engine).
3. `actionness_grouping` (temporal actionness grouping, Zhao et al. 2017): actionness = 1 -
   P(background); runs of frames above each of several thresholds are proposals, each labelled by
   its mean class probabilities, scored by mean actionness x class probability, then temporal NMS.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.errors import ConfigError, DataError
from fovea.video.dataset import LITE0_MEAN_255, LITE0_STD_255
from fovea.video.metrics import Segment, temporal_nms
from fovea.video.transforms import frames_to_clip, normalize, resize_short_side


@torch.no_grad()
def frame_features(tsm: nn.Module, frames: np.ndarray, *, stride: int = 2, short_side: int | None = None,
                   chunk: int = 256, mean=LITE0_MEAN_255, std=LITE0_STD_255) -> np.ndarray:
    """(N, H, W, 3) uint8 frames -> (N, F) float32 per-frame features of a causal TSM.

    Frame t's feature sees frames t, t - stride, t - 2 stride, ... (its stream); `chunk` bounds the
    frames per forward (memory), with `tsm.num_shifts` frames of warm-up so the result is exact."""
    if getattr(tsm, "shift_mode", None) != "causal":
        raise ConfigError("frame_features needs a causal TSM (shift_mode='causal'): a bidirectional shift "
                          "looks ahead. Fix: build/train the TSM with shift_mode='causal'.")
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise DataError(f"frame_features: frames must be a non-empty (N, H, W, 3) array, got {frames.shape}")
    if stride < 1 or chunk < 1:
        raise ConfigError(f"frame_features: stride={stride} and chunk={chunk} must be >= 1")
    was = tsm.training
    tsm.eval()
    warm = int(tsm.num_shifts)
    out = np.zeros((len(frames), tsm.num_features), np.float32)
    try:
        for phase in range(stride):
            idx = np.arange(phase, len(frames), stride)
            for c0 in range(0, len(idx), chunk):
                lo = max(0, c0 - warm)
                sel = idx[lo:c0 + chunk]
                clip = frames_to_clip(frames[sel])
                if short_side:
                    clip = resize_short_side(clip, short_side)
                feats = tsm.forward_frames(normalize(clip, mean, std).unsqueeze(0))[0]      # (T, F)
                out[sel[c0 - lo:]] = feats[c0 - lo:].float().numpy()
    finally:
        tsm.train(was)
    return out


def frame_labels(events, n_frames: int, fps: float, kinds: list[str] | tuple[str, ...]) -> np.ndarray:
    """(n_frames,) int64: the index in `kinds` of the event covering frame k (time k / fps), 0 (the
    background, kinds[0]) elsewhere. events: objects with kind, t_start_s, t_end_s."""
    y = np.zeros(n_frames, np.int64)
    t = np.arange(n_frames) / fps
    for e in events:
        if e.kind not in kinds:
            raise DataError(f"event kind {e.kind!r} is not one of the localization classes {list(kinds)}")
        y[(t >= e.t_start_s) & (t <= e.t_end_s)] = list(kinds).index(e.kind)
    return y


class TemporalConvHead(nn.Module):
    """Per-frame classifier over time: 1x1 projection, dilated same-padded 1D convolutions with
    residuals, 1x1 to K classes. (B, T, F) features -> (B, T, K) logits."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, kernel: int = 5,
                 dilations: tuple[int, ...] = (1, 2, 4), dropout: float = 0.3):
        super().__init__()
        if kernel % 2 == 0:
            raise ConfigError(f"TemporalConvHead kernel={kernel} must be odd (centred, same length)")
        self.proj = nn.Conv1d(in_features, hidden, 1)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=d * (kernel // 2), dilation=d)
                                   for d in dilations)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv1d(hidden, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.proj(self.dropout(x.transpose(1, 2))))
        for conv in self.convs:
            h = h + F.relu(conv(h))
        return self.out(self.dropout(h)).transpose(1, 2)


class FrameWindows(torch.utils.data.Dataset):
    """Windows of `length` frames every `step` frames over per-video features and labels:
    items (features (length, F) float32, labels (length,) int64)."""

    def __init__(self, features: list[np.ndarray], labels: list[np.ndarray], length: int = 128, step: int = 32):
        if not features or len(features) != len(labels):
            raise DataError(f"FrameWindows: {len(features)} feature arrays for {len(labels)} label arrays")
        self.windows = []
        for f, y in zip(features, labels):
            if len(f) != len(y):
                raise DataError(f"FrameWindows: {len(f)} frames of features but {len(y)} labels")
            starts = range(0, max(len(f) - length, 0) + 1, step)
            self.windows += [(torch.from_numpy(f[s:s + length]), torch.from_numpy(y[s:s + length])) for s in starts]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        return self.windows[i]


class FrameLabelTask:
    """TaskSpec for `fovea.engine.train.fit`: per-frame cross-entropy of a TemporalConvHead."""

    name = "video_localize"

    def __init__(self, model: TemporalConvHead):
        self.model = model

    def training_loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def validation_metrics(self, model: nn.Module, loader) -> dict[str, float]:
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                correct += int((model(x).argmax(-1) == y).sum())
                total += y.numel()
        return {"val_frame_acc": correct / max(total, 1)}


@torch.no_grad()
def head_probabilities(head: TemporalConvHead, features: np.ndarray) -> np.ndarray:
    """(N, F) features of one video -> (N, K) per-frame class probabilities."""
    head.eval()
    return F.softmax(head(torch.from_numpy(np.asarray(features, np.float32))[None]), dim=-1)[0].numpy()


def actionness_grouping(frame_probs: np.ndarray, fps: float, thresholds=(0.3, 0.4, 0.5, 0.6, 0.7),
                        background: int = 0, min_len_s: float = 0.2, nms_iou: float = 0.5) -> list[Segment]:
    """(N, K) per-frame probabilities -> scored, NMS-ed segments of the non-background classes.

    For each threshold, maximal runs of frames with actionness 1 - P(background) >= threshold are
    proposals; a proposal's class is the argmax of its mean non-background probabilities and its
    score the mean actionness times that class's mean share. Frame k spans [k / fps, (k + 1) / fps)."""
    p = np.asarray(frame_probs, np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(f"actionness_grouping: frame_probs must be (N, K >= 2), got {p.shape}")
    act = 1.0 - p[:, background]
    fg = [c for c in range(p.shape[1]) if c != background]
    out = []
    for th in thresholds:
        on = np.concatenate([[False], act >= th, [False]])
        starts = np.nonzero(on[1:] & ~on[:-1])[0]
        ends = np.nonzero(~on[1:] & on[:-1])[0]
        for s, e in zip(starts, ends):
            if (e - s) / fps < min_len_s:
                continue
            cls_mean = p[s:e, fg].mean(0)
            k = int(cls_mean.argmax())
            share = cls_mean[k] / max(cls_mean.sum(), 1e-12)
            out.append(Segment(s / fps, e / fps, fg[k], float(act[s:e].mean() * share)))
    return temporal_nms(out, nms_iou)
