"""Which frames to read: TSN segments, dense clips, uniform clips, multi-clip test views.

All samplers are pure functions of (num_frames, settings, rng) returning int64 frame indices;
MMAction2's naming: `clip_len x frame_interval x num_clips`. Training draws random offsets from
the seeded `rng`; testing is deterministic (segment centres, evenly spaced clips).
"""

from __future__ import annotations

import numpy as np

from fovea.errors import ConfigError


def _check(num_frames: int, **positive: int) -> None:
    if num_frames <= 0:
        raise ConfigError(f"a video with {num_frames} frames cannot be sampled; it is empty")
    for name, v in positive.items():
        if v <= 0:
            raise ConfigError(f"sampler {name}={v} must be > 0")


def tsn_indices(num_frames: int, num_segments: int, *, train: bool, rng: np.random.Generator | None = None
                ) -> np.ndarray:
    """TSN: split [0, num_frames) into `num_segments` equal segments, one frame from each (a random one
    when training, the centre one when testing). (num_segments,) indices, non-decreasing."""
    _check(num_frames, num_segments=num_segments)
    edges = np.arange(num_segments + 1) * num_frames / num_segments
    if train:
        rng = rng or np.random.default_rng()
        pos = edges[:-1] + rng.random(num_segments) * (edges[1:] - edges[:-1])
    else:
        pos = (edges[:-1] + edges[1:]) / 2
    return np.minimum(np.floor(pos).astype(np.int64), num_frames - 1)


def tsn_test_views(num_frames: int, num_segments: int, num_clips: int) -> np.ndarray:
    """Multi-clip TSN testing: `num_clips` samplings whose offsets are spread evenly inside every
    segment (clip k at fraction (k + 0.5) / num_clips). (num_clips, num_segments); one clip = the centres."""
    _check(num_frames, num_segments=num_segments, num_clips=num_clips)
    edges = np.arange(num_segments + 1) * num_frames / num_segments
    frac = (np.arange(num_clips) + 0.5) / num_clips
    pos = edges[None, :-1] + frac[:, None] * (edges[1:] - edges[:-1])[None]
    return np.minimum(np.floor(pos).astype(np.int64), num_frames - 1)


def dense_indices(num_frames: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1, *, train: bool,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Dense clips of `clip_len` frames `frame_interval` apart: one random start per clip when training,
    `num_clips` evenly spaced starts when testing. Frames past the end repeat the last frame.
    (num_clips * clip_len,) indices, clip after clip."""
    _check(num_frames, clip_len=clip_len, frame_interval=frame_interval, num_clips=num_clips)
    span = (clip_len - 1) * frame_interval + 1
    room = max(num_frames - span, 0)
    if train:
        rng = rng or np.random.default_rng()
        starts = rng.integers(0, room + 1, num_clips)
    elif num_clips == 1:
        starts = np.array([room // 2])
    else:
        starts = np.round(np.linspace(0, room, num_clips)).astype(np.int64)
    idx = starts[:, None] + np.arange(clip_len)[None] * frame_interval
    return np.minimum(idx, num_frames - 1).reshape(-1).astype(np.int64)


def uniform_indices(num_frames: int, clip_len: int) -> np.ndarray:
    """`clip_len` frames spread evenly over the whole video (first and last included)."""
    _check(num_frames, clip_len=clip_len)
    return np.round(np.linspace(0, num_frames - 1, clip_len)).astype(np.int64)


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frames of sliding windows of `window` frames every `stride` frames covering the video."""
    _check(num_frames, window=window, stride=stride)
    last = max(num_frames - window, 0)
    starts = np.arange(0, last + 1, stride)
    return starts if starts[-1] == last else np.append(starts, last)
