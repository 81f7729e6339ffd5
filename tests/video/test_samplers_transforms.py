"""Samplers against loops over the definition, transforms against numpy/OpenCV per-frame references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fovea.errors import ConfigError
from fovea.video.samplers import dense_indices, tsn_indices, uniform_indices, window_starts
from fovea.video.transforms import (center_crop, frames_to_clip, hflip, normalize, resize_short_side,
                                    three_crop, vflip)


@pytest.mark.parametrize("n,segs", [(100, 8), (7, 8), (250, 3), (8, 8)])
def test_tsn_test_indices_are_segment_centres(n, segs):
    want = [min(int((k + 0.5) * n / segs), n - 1) for k in range(segs)]
    assert tsn_indices(n, segs, train=False).tolist() == want


def test_tsn_train_indices_stay_in_their_segments_and_cover_them():
    n, segs = 100, 8
    rng = np.random.default_rng(0)
    seen = [set() for _ in range(segs)]
    for _ in range(400):
        idx = tsn_indices(n, segs, train=True, rng=rng)
        for k, i in enumerate(idx):
            lo, hi = k * n / segs, (k + 1) * n / segs
            assert lo - 1 < i < hi and 0 <= i < n
            seen[k].add(int(i))
    for k in range(segs):
        assert seen[k] == set(range(int(np.floor(k * n / segs)), int(np.ceil((k + 1) * n / segs))))


def test_dense_clips():
    idx = dense_indices(100, 8, 2, 1, train=False)
    assert idx.tolist() == [42 + 2 * k for k in range(8)]                     # centred: room 85 // 2
    multi = dense_indices(100, 4, 1, 3, train=False).reshape(3, 4)
    assert multi[:, 0].tolist() == [0, 48, 96] and (np.diff(multi, axis=1) == 1).all()
    short = dense_indices(5, 8, 1, 1, train=False)
    assert short.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]                         # past the end: last frame
    rng = np.random.default_rng(1)
    starts = {int(dense_indices(20, 4, 2, 1, train=True, rng=rng)[0]) for _ in range(300)}
    assert starts == set(range(0, 20 - 7 + 1))


def test_uniform_and_windows():
    assert uniform_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert window_starts(20, 8, 5).tolist() == [0, 5, 10, 12]
    with pytest.raises(ConfigError, match="empty"):
        tsn_indices(0, 8, train=False)
    with pytest.raises(ConfigError, match="num_segments=0"):
        tsn_indices(10, 0, train=False)


def test_transforms_match_per_frame_references():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (3, 40, 60, 3), dtype=np.uint8)
    clip = frames_to_clip(frames)
    assert clip.shape == (3, 3, 40, 60)
    assert torch.equal(clip[:, 1], torch.from_numpy(frames[1]).permute(2, 0, 1).float())
    cc = center_crop(clip, 32)
    assert torch.equal(cc, clip[:, :, 4:36, 14:46])
    crops = three_crop(clip, 40)
    assert [c.shape[-1] for c in crops] == [40] * 3
    assert torch.equal(crops[0], clip[..., :40]) and torch.equal(crops[2], clip[..., 20:])
    up = resize_short_side(clip, 80)                                          # upscaling: plain bilinear
    assert up.shape[-2:] == (80, 120)
    ref = cv2.resize(frames[2], (120, 80), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert np.abs(up[:, 2].permute(1, 2, 0).numpy() - ref).mean() < 0.6
    assert torch.equal(hflip(clip)[..., 0], clip[..., -1])
    assert torch.equal(vflip(clip)[:, 1], torch.from_numpy(frames[1, ::-1].copy()).permute(2, 0, 1).float())
    normed = normalize(clip, (10.0, 20.0, 30.0), (2.0, 4.0, 5.0))
    assert torch.allclose(normed[1], (clip[1] - 20) / 4)
    with pytest.raises(ConfigError, match="exceeds"):
        center_crop(clip, 50)
