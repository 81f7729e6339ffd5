"""Frame-level localization: chunked whole-video TSM features = the online recognizer's frame by
frame features, frame labels, the temporal head and actionness grouping against hand values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fovea.models.video as V
from fovea.errors import ConfigError, DataError
from fovea.models.video.tsm import OnlineTSM
from fovea.video.dataset import LITE0_MEAN_255, LITE0_STD_255
from fovea.video.temporal import (FrameLabelTask, FrameWindows, TemporalConvHead, actionness_grouping,
                                  frame_features, frame_labels, head_probabilities)


def _online_reference(model, frames: np.ndarray, stride: int) -> np.ndarray:
    """The slow path: one OnlineTSM per stream, stepped frame by frame."""
    online = OnlineTSM(model.eval())
    out = np.zeros((len(frames), model.num_features), np.float32)
    mean = torch.tensor(LITE0_MEAN_255).view(1, 3, 1, 1)
    std = torch.tensor(LITE0_STD_255).view(1, 3, 1, 1)
    for phase in range(stride):
        online.reset()
        for k in range(phase, len(frames), stride):
            x = torch.from_numpy(frames[k]).permute(2, 0, 1)[None].float()
            out[k] = online.step((x - mean) / std)[0].numpy()
    return out


def test_chunked_features_equal_the_online_recognizer_frame_by_frame():
    torch.manual_seed(0)
    model = V.create_model("tsm_lite0", num_classes=3, weights="random", num_segments=4)
    frames = np.random.default_rng(0).integers(0, 256, (29, 32, 32, 3), dtype=np.uint8)
    ref = _online_reference(model, frames, stride=2)
    # chunk 4 << 15 frames per stream: every chunk but the first depends on its warm-up frames
    got = frame_features(model, frames, stride=2, chunk=4)
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)
    cut = frame_features(model, frames[:21], stride=2, chunk=100)     # causal: the future is never used
    np.testing.assert_allclose(cut, got[:21], atol=2e-4, rtol=1e-4)


def test_frame_features_refuses_a_bidirectional_tsm():
    model = V.create_model("tsm_lite0", num_classes=3, weights="random", shift_mode="bidirectional")
    with pytest.raises(ConfigError, match="causal"):
        frame_features(model, np.zeros((4, 32, 32, 3), np.uint8))


def test_frame_labels_by_hand():
    ev = [SimpleNamespace(kind="fall", t_start_s=0.25, t_end_s=0.5), SimpleNamespace(kind="jam", t_start_s=0.8,
                                                                                   t_end_s=2.0)]
    y = frame_labels(ev, 10, fps=10.0, kinds=("normal", "jam", "fall"))
    assert y.tolist() == [0, 0, 0, 2, 2, 2, 0, 0, 1, 1]     # frames at 0.3, 0.4, 0.5 s; 0.8, 0.9 s
    with pytest.raises(DataError, match="rollback"):
        frame_labels([SimpleNamespace(kind="rollback", t_start_s=0, t_end_s=1)], 5, 10.0, ("normal", "jam"))


def test_actionness_grouping_by_hand():
    p = np.zeros((20, 3))
    p[:, 0] = 1.0
    p[3:8] = [0.1, 0.8, 0.1]           # class 1, actionness 0.9, share 0.8 / 0.9: score 0.8
    p[12:14] = [0.35, 0.05, 0.6]       # class 2, actionness 0.65, share 0.6 / 0.65: score 0.6
    segs = actionness_grouping(p, fps=10.0, thresholds=(0.5,), min_len_s=0.1)
    got = sorted((s.label, s.start_s, s.end_s, round(s.score, 6)) for s in segs)
    assert got == [(1, 0.3, 0.8, 0.8), (2, 1.2, 1.4, 0.6)]
    # at threshold 0.7 only the first run survives; proposals of both thresholds are NMS-ed to one
    segs = actionness_grouping(p, fps=10.0, thresholds=(0.5, 0.7), min_len_s=0.1)
    assert sorted(s.label for s in segs) == [1, 2]
    assert actionness_grouping(p, fps=10.0, thresholds=(0.5,), min_len_s=0.3)[0].label == 1


def test_temporal_head_learns_a_delayed_cue(tmp_path):
    """Frame labels depend on a cue 2 frames earlier: a per-frame (1x1) model cannot fit them, the
    dilated temporal head must reach 95 % frame accuracy."""
    from fovea.engine.train import TrainConfig, fit

    rng = np.random.default_rng(0)
    feats, labels = [], []
    for _ in range(8):
        cue = (rng.random(96) < 0.3).astype(np.float32)
        f = rng.normal(0, 0.1, (96, 4)).astype(np.float32)
        f[:, 0] += cue
        y = np.zeros(96, np.int64)
        y[2:] = cue[:-2].astype(np.int64)
        feats.append(f)
        labels.append(y)
    torch.manual_seed(0)
    head = TemporalConvHead(4, 2, hidden=16, kernel=3, dilations=(1, 2), dropout=0.0)
    fit(FrameLabelTask(head), FrameWindows(feats, labels, length=48, step=16), None,
        TrainConfig(lr=1e-2, batch_size=8, max_epochs=40, out_dir=str(tmp_path), seed=0))
    f_test = rng.normal(0, 0.1, (200, 4)).astype(np.float32)
    cue = (rng.random(200) < 0.3)
    f_test[:, 0] += cue
    acc = (head_probabilities(head, f_test)[2:].argmax(1) == cue[:-2]).mean()
    assert acc >= 0.95
