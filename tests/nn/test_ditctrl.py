"""DiTCtrl's ops against hand-computed weights, slow loops and naive attention; CSCV by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fovea.nn.ditctrl import (KVSharingSchedule, blend_segments, cscv, kv_sharing_attention, mask_guided_kv_sharing,
                              segment_starts, segment_weights, token_attention_mask, total_frames)


def test_segment_weights_are_the_triangle():
    w = segment_weights(13)
    assert w[0].item() == pytest.approx(1 / 13) and w[12].item() == pytest.approx(1 / 13)
    assert w[6].item() == pytest.approx(1.0) and w[1].item() == pytest.approx(3 / 13)
    assert torch.allclose(w, w.flip(0))
    assert segment_weights(4).tolist() == pytest.approx([0.25, 0.75, 0.75, 0.25])


def test_layout_of_overlapping_segments():
    assert segment_starts(3, 13, 9) == [0, 4, 8] and total_frames(3, 13, 9) == 21
    with pytest.raises(ValueError, match="overlap"):
        segment_starts(2, 4, 4)


def test_blend_equals_a_slow_per_frame_loop():
    torch.manual_seed(0)
    length, overlap, segs = 5, 3, 3
    starts, frames = segment_starts(segs, length, overlap), total_frames(segs, length, overlap)
    preds = [torch.randn(length, 2, 3, dtype=torch.float64) for _ in range(segs)]
    got = blend_segments(preds, starts, frames)
    w = segment_weights(length)
    for f in range(frames):
        num, den = torch.zeros(2, 3, dtype=torch.float64), 0.0
        for p, s in zip(preds, starts):
            if s <= f < s + length:
                num += w[f - s] * p[f - s]
                den += float(w[f - s])
        assert torch.allclose(got[f], num / den)
    const = blend_segments([torch.full((length, 1), 7.0, dtype=torch.float64)] * segs, starts, frames)
    assert torch.allclose(const, torch.full_like(const, 7.0))
    with pytest.raises(ValueError, match="covered by no segment"):
        blend_segments(preds[:1], [0], frames)


def _naive(q, k, v, allowed=None):
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.softmax(logits, -1) @ v


def test_kv_sharing_and_its_mask_guided_variant_equal_naive_attention():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, n, 4, dtype=torch.float64) for n in (6, 8, 8))
    assert torch.allclose(kv_sharing_attention(q, k, v), _naive(q, k, v))
    src = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    tgt = torch.tensor([1, 0, 0, 1, 1, 0], dtype=torch.bool)
    got = mask_guided_kv_sharing(q, k, v, src, tgt)
    for i in range(6):
        allowed = src if tgt[i] else ~src
        ref = _naive(q[:, :, i:i + 1], k, v, allowed[None, None, None, :])
        assert torch.allclose(got[:, :, i:i + 1], ref)
    empty = torch.zeros(8, dtype=torch.bool)
    assert torch.allclose(mask_guided_kv_sharing(q, k, v, empty, tgt), _naive(q, k, v))


def test_schedule_window():
    s = KVSharingSchedule()
    assert s.active(2, 25) and s.active(24, 29)
    assert not s.active(1, 25) and not s.active(25, 25) and not s.active(10, 24) and not s.active(10, 30)


def test_token_mask_from_attention_by_hand():
    # 2 heads, 2 frames of 1x2 video tokens, 3 text tokens; object = text token 1
    attn = torch.zeros(2, 4, 3)
    attn[:, :, 1] = torch.tensor([[0.1, 0.9, 0.5, 0.5], [0.3, 0.7, 0.2, 0.6]])  # heads average to .2 .8 .35 .55
    mask = token_attention_mask(attn, [1], frames=2, height=1, width=2, threshold=0.3)
    # frame 0: (.2, .8) -> (0, 1) -> [F, T]; frame 1: (.35, .55) -> (0, 1) -> [F, T]
    assert mask.tolist() == [False, True, False, True]


def test_cscv_by_hand():
    assert cscv(torch.ones(6, 4)) == pytest.approx(1.0)
    # similarities (1, 0.5): mean .75, population std .25 -> CV = 10/3 -> 1 / (1 + 10/3) = 3/13
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(0.75)]])
    assert cscv(e) == pytest.approx(3 / 13)
    smooth = torch.stack([torch.tensor([math.cos(a), math.sin(a)]) for a in torch.linspace(0, 1.0, 10)])
    cut = torch.cat([torch.tensor([[1.0, 0.0]] * 5), torch.tensor([[math.cos(1.0), math.sin(1.0)]] * 5)])
    assert cscv(smooth) > cscv(cut)
    with pytest.raises(ValueError, match="at least 3 frames"):
        cscv(torch.ones(2, 3))
