"""Temporal localization over a long video: per-frame class probabilities from sliding windows,
then segments (runs above a threshold), temporal NMS and ActivityNet mAP (`fovea.video.metrics`).

A window of `window` consecutive frames centred on frame t is classified as a clip (the model's
num_segments frames sampled from it); its probabilities are frame t's. Windows every `stride`
frames; frames between window centres get linearly interpolated probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fovea.video.dataset import LITE0_MEAN_255, LITE0_STD_255
from fovea.video.metrics import Segment, segments_from_scores, temporal_nms
from fovea.video.samplers import tsn_indices
from fovea.video.transforms import frames_to_clip, normalize, resize_short_side


@torch.no_grad()
def frame_probabilities(model: torch.nn.Module, frames: np.ndarray, window: int = 8, num_segments: int = 8,
                        stride: int = 2, batch: int = 8, short_side: int | None = None,
                        mean=LITE0_MEAN_255, std=LITE0_STD_255) -> np.ndarray:
    """(N, H, W, 3) uint8 frames -> (N, K) class probabilities per frame."""
    model.eval()
    n = len(frames)
    half = window // 2
    centres = np.arange(0, n, stride)
    if centres[-1] != n - 1:
        centres = np.append(centres, n - 1)
    pick = tsn_indices(window, num_segments, train=False)
    probs = []
    for b0 in range(0, len(centres), batch):
        clips = []
        for c in centres[b0:b0 + batch]:
            idx = np.clip(c - half + pick, 0, n - 1)
            clip = frames_to_clip(frames[idx])
            if short_side:
                clip = resize_short_side(clip, short_side)
            clips.append(normalize(clip, mean, std))
        probs.append(F.softmax(model(torch.stack(clips)), dim=-1).numpy())
    p = np.concatenate(probs)
    out = np.stack([np.interp(np.arange(n), centres, p[:, k]) for k in range(p.shape[1])], axis=1)
    return out


def localize(frame_probs: np.ndarray, fps: float, threshold: float = 0.5, min_len_s: float = 0.2,
             nms_iou: float = 0.5, background: int = 0) -> list[Segment]:
    """Per-frame probabilities (N, K) -> temporally NMS-ed segments of the non-background classes."""
    return temporal_nms(segments_from_scores(frame_probs, fps, threshold, min_len_s, background), nms_iou)
