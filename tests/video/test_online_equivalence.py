"""The online recognizer (fast stream: BatchNorm folded, channels-last) against the offline causal
TSM on the same frames: each processed frame's probabilities equal softmax(fc(mean of the offline
model's per-frame features over the last `window` processed frames))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fovea.models.video as V
from fovea.video.dataset import LITE0_MEAN_255, LITE0_STD_255
from fovea.video.online import OnlineEventRecognizer


@torch.no_grad()
@pytest.mark.parametrize("fast", [True, False])
def test_recognizer_probabilities_equal_the_offline_causal_model(fast):
    torch.manual_seed(0)
    model = V.create_model("tsm_lite0", num_classes=5, weights="random", num_segments=4, shift_mode="causal").eval()
    for m in model.modules():                       # BatchNorm statistics that folding must carry over
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
    model.fc.weight.mul_(3)                         # spread the probabilities so a mismatch shows
    before = {k: v.clone() for k, v in model.state_dict().items()}
    window, stride, n = 3, 2, 11
    frames = np.random.default_rng(0).integers(0, 256, size=(n, 40, 56, 3), dtype=np.uint8)
    rec = OnlineEventRecognizer(model, list("abcde"), window=window, frame_stride=stride, warmup=1, fast=fast)
    got = [rec.push(f) for f in frames]

    processed = frames[::stride]                    # the offline reference: the processed frames as one clip
    x = torch.from_numpy(processed).permute(3, 0, 1, 2).float()           # (3, T, H, W)
    mean, std = torch.tensor(LITE0_MEAN_255).view(3, 1, 1, 1), torch.tensor(LITE0_STD_255).view(3, 1, 1, 1)
    feats = model.forward_frames(((x - mean) / std).unsqueeze(0))[0]      # (T, F), causal shift
    for i, p in enumerate(got):
        if i % stride:
            assert p is None
            continue
        k = i // stride
        want = torch.softmax(model.fc(feats[max(0, k - window + 1):k + 1].mean(0)), dim=-1).numpy()
        np.testing.assert_allclose(p, want, atol=2e-4)
    assert all(0.3 < np.max(p) < 0.95 for p in got if p is not None)     # neither flat nor saturated
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())   # model untouched
    if fast:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in rec.online.tsm.modules())
