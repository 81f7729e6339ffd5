"""Forgery generator: masks are exactly the changed pixels (diff against the host), kinds do what they
say (a copy-move's pixels stand elsewhere in the same image), post-processing, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fovea.errors import ConfigError
from fovea.synth.forgery import (HELD_OUT_SOURCES, KINDS, TRAIN_SOURCES, ForgeryConfig, forgery_sample,
                                 generate_forgeries, load_source)

SMALL = ForgeryConfig(size=(64, 64), region_fraction=(0.05, 0.12))


def test_mask_is_exactly_the_changed_pixels_for_every_kind():
    seen = set()
    for s in generate_forgeries(24, seed=3, config=SMALL):
        seen.add(s.kind)
        changed = np.any(s.image.astype(int) != s.original.astype(int), axis=2)  # independent diff
        np.testing.assert_array_equal(s.mask, changed, err_msg=s.kind)
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8 and s.mask.dtype == bool
        if s.kind == "authentic":
            assert not s.mask.any() and np.array_equal(s.image, s.original)
        else:  # a polygon of 5-12 % of the image, plus a feathered rim, less pixels whose value did not change
            assert 0.01 < s.mask.mean() < 0.35, (s.kind, s.mask.mean())
        if s.kind == "splice":
            assert s.donor in TRAIN_SOURCES and s.donor != s.source
    assert seen == set(KINDS)


def test_a_translated_copy_move_repeats_its_pixels_elsewhere_in_the_image():
    cfg = ForgeryConfig(size=(64, 64), kinds=("copy_move",), feather_prob=0.0, copy_scale=(1.0, 1.0),
                        copy_angle_deg=(0.0, 0.0), region_fraction=(0.05, 0.1))
    for i in range(2):
        s = forgery_sample(7, i, cfg)
        dy_true, dx_true = (round(v) for v in s.params["shift_px"][::-1])
        ys, xs = np.nonzero(s.mask)
        # brute force over every shift: where in the ORIGINAL did the manipulated pixels come from?
        best = []
        for dy in range(-63, 64):
            for dx in range(-63, 64):
                sy, sx = ys - dy, xs - dx
                if sy.min() < 0 or sx.min() < 0 or sy.max() > 63 or sx.max() > 63:
                    continue
                if np.array_equal(s.original[sy, sx], s.image[ys, xs]):
                    best.append((dy, dx))
        assert (dy_true, dx_true) in best, (best, dy_true, dx_true)


def test_inpainting_changes_only_pixels_inside_one_region():
    cfg = ForgeryConfig(size=(64, 64), kinds=("inpaint",), region_fraction=(0.08, 0.1))
    s = forgery_sample(1, 0, cfg)
    ys, xs = np.nonzero(s.mask)
    assert s.kind == "inpaint" and s.params["method"] in ("telea", "ns")
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert s.mask.sum() > 0.2 * box  # one compact region, not scattered changes


def test_determinism_by_seed_and_independence_of_set_size():
    a = generate_forgeries(6, seed=11, config=SMALL)
    b = generate_forgeries(3, seed=11, config=SMALL)
    c = generate_forgeries(3, seed=12, config=SMALL)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) and x.kind == y.kind
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(b, c))


def test_post_processing_jpeg_and_resize():
    base = ForgeryConfig(size=(64, 64), kinds=("splice",), region_fraction=(0.1, 0.12))
    jpeg = ForgeryConfig(size=(64, 64), kinds=("splice",), region_fraction=(0.1, 0.12), jpeg_quality=(60, 60))
    raw, recompressed = forgery_sample(5, 0, base), forgery_sample(5, 0, jpeg)
    assert recompressed.params["jpeg_quality"] == 60
    np.testing.assert_array_equal(recompressed.mask, raw.mask)  # JPEG noise is not a manipulation
    outside = ~raw.mask
    assert np.any(recompressed.image[outside] != raw.image[outside])  # but the whole image was re-encoded
    assert np.abs(recompressed.image.astype(int) - raw.image.astype(int)).mean() < 8
    half = forgery_sample(5, 0, ForgeryConfig(size=(64, 64), kinds=("splice",), region_fraction=(0.1, 0.12),
                                              resize=(0.5, 0.5)))
    assert half.image.shape == (32, 32, 3) and half.mask.shape == (32, 32)
    assert abs(half.mask.mean() - raw.mask.mean()) < 0.03


def test_sources_are_split_and_bad_configs_are_refused():
    assert not set(TRAIN_SOURCES) & set(HELD_OUT_SOURCES)
    assert load_source("gravel").shape == (512, 512, 3)
    held = generate_forgeries(4, 0, ForgeryConfig(size=(64, 64), sources=HELD_OUT_SOURCES))
    assert all(s.source in HELD_OUT_SOURCES and s.donor in (None, *HELD_OUT_SOURCES) for s in held)
    with pytest.raises(ConfigError, match="unknown forgery kind"):
        ForgeryConfig(kinds=("blur",))
    with pytest.raises(ConfigError, match="unknown source picture"):
        ForgeryConfig(sources=("lena",))
    with pytest.raises(ConfigError, match="two source pictures"):
        ForgeryConfig(sources=("rocket",))
    with pytest.raises(ConfigError, match="region_fraction"):
        ForgeryConfig(region_fraction=(0.3, 0.6))
