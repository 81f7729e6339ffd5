"""The captioned moving-object generator against closed forms: straight-line centres, object areas, captions
read back from the pixels, determinism, clear errors; and the benchmark's prompt pairs and adherence check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fovea.errors import ConfigError, DataError
from fovea.gen.evaluate import adherence, prompt_pairs
from fovea.synth.moving_objects import (BELT_RGB, COLOURS, VOCAB, ClipSpec, make_clip, parse_caption, random_spec,
                                        read_clip, render_clip, sample_clips, tokenize)


def test_centres_follow_the_straight_line_and_the_object_stays_inside():
    spec = ClipSpec("red", "apple", "left", (25.0, 10.0), speed_px=2.0)
    video, centres = render_clip(spec, frames=8, size=32)
    assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
    assert np.allclose(centres, [[25 - 2 * k, 10] for k in range(8)])
    # the pixel-weighted centroid of the drawn object is the ground-truth centre (symmetric shapes)
    for t in range(8):
        d = np.abs(video[t].astype(float) - BELT_RGB).sum(-1)
        ys, xs = np.mgrid[0:32, 0:32] + 0.5
        assert (xs * d).sum() / d.sum() == pytest.approx(centres[t, 0], abs=0.05)
        assert (ys * d).sum() / d.sum() == pytest.approx(centres[t, 1], abs=0.05)
    with pytest.raises(ConfigError, match="leaves the 32 x 32 frame"):
        render_clip(ClipSpec("red", "apple", "left", (10.0, 10.0)), frames=8, size=32)


def test_edge_starts_enter_from_the_edge_they_leave():
    rng = np.random.default_rng(0)
    for direction, axis, first in (("right", 0, 4.0), ("left", 0, 28.0), ("up", 1, 28.0), ("down", 1, 4.0)):
        spec = random_spec(rng, frames=8, size=32, direction=direction, start="edge")
        assert spec.start_xy[axis] == first and 4 <= spec.start_xy[1 - axis] <= 28
        render_clip(spec)  # stays inside
    with pytest.raises(ConfigError, match="start"):
        random_spec(rng, start="middle")


def test_object_areas_are_the_disk_and_the_square():
    r = 4.0  # size / 8
    for obj, area in (("apple", math.pi * r * r), ("brick", (2 * r) ** 2)):
        video, _ = render_clip(ClipSpec("blue", obj, "down", (16.3, 6.0)), frames=1, size=32)
        full = np.abs(np.asarray(COLOURS["blue"], float) - BELT_RGB).sum()
        drawn = np.abs(video[0].astype(float) - BELT_RGB).sum(-1).sum() / full
        assert drawn == pytest.approx(area, rel=0.02)


def test_captions_tokens_and_read_back_match_the_ground_truth():
    clips = sample_clips(48, seed=3)
    for c in clips:
        assert [VOCAB[i] for i in c.tokens] == c.caption.split()
        r = read_clip(c.frames)
        assert (r.colour, r.object, r.direction) == (c.spec.colour, c.spec.object, c.spec.direction)
        assert np.allclose(r.centres, c.centres, atol=0.05)
        assert adherence(c.frames, c.caption).all
    assert {c.spec.direction for c in clips} == {"left", "right", "up", "down"}
    frozen = np.repeat(clips[0].frames[:1], 8, axis=0)
    assert read_clip(frozen).direction == "still" and not adherence(frozen, clips[0].caption).direction


def test_read_back_survives_a_soft_rendering():
    import cv2

    for c in sample_clips(24, seed=5):
        soft = np.stack([cv2.GaussianBlur(f, (0, 0), 0.7) for f in c.frames])
        r = read_clip(soft)
        assert (r.colour, r.object, r.direction) == (c.spec.colour, c.spec.object, c.spec.direction)


def test_determinism_and_errors():
    a, b = sample_clips(5, seed=7), sample_clips(5, seed=7)
    assert all(np.array_equal(x.frames, y.frames) and x.caption == y.caption for x, y in zip(a, b))
    assert any(not np.array_equal(x.frames, y.frames) for x, y in zip(a, sample_clips(5, seed=8)))
    with pytest.raises(ConfigError, match="purple"):
        tokenize("a purple apple moves right")
    with pytest.raises(ConfigError):
        make_clip(ClipSpec("red", "pear", "up", (16.0, 20.0)))
    with pytest.raises(DataError, match="uint8"):
        read_clip(np.zeros((4, 8, 8), np.uint8))
    empty = read_clip(np.full((3, 8, 8, 3), BELT_RGB, np.uint8))
    assert empty.colour is None and empty.direction == "still"


def test_prompt_pairs_change_exactly_one_attribute():
    pairs = prompt_pairs(24, seed=0)
    assert len(pairs) == 24 and pairs == prompt_pairs(24, seed=0)
    for a, b, kind in pairs:
        wa, wb = parse_caption(a), parse_caption(b)
        changed = [k for k, x, y in zip(("colour", "object", "direction"), wa, wb) if x != y]
        assert changed == [kind]


@pytest.mark.slow  # building the Lite0 backbone takes ~10 s on the loaded 2-core machine
def test_cscv_on_fovea_embeddings_prefers_a_moving_object_to_a_cut():
    from fovea.gen.evaluate import FrameEmbedder, clip_cscv
    from fovea.synth.moving_objects import ClipSpec

    embed = FrameEmbedder(size=64)
    moving = make_clip(ClipSpec("red", "apple", "right", (6.0, 16.0)), frames=8).frames
    cut = np.concatenate([moving[:4], make_clip(ClipSpec("blue", "brick", "left", (26.0, 8.0)), frames=8).frames[4:]])
    assert clip_cscv(embed, np.repeat(moving[:1], 6, axis=0)) == pytest.approx(1.0)
    assert clip_cscv(embed, moving) > clip_cscv(embed, cut)
