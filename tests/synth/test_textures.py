"""Texture anomalies: masks mark exactly where the defect changed the crop; determinism; MVTec layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fovea.data import load_mvtec
from fovea.errors import ConfigError
from fovea.cli.synth import textures_cmd as cli
from fovea.synth.textures import DEFECTS, TEXTURES, generate_textures, render_texture_sample


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("defect", DEFECTS)
def test_mask_marks_the_changed_pixels(texture, defect):
    """Same seed without the defect gives the same crop, so the difference image shows the defect."""
    for seed in range(2):
        good, gmask = render_texture_sample(texture, None, seed, 96)
        bad, mask = render_texture_sample(texture, defect, seed, 96)
        assert not gmask.any() and mask.any() and mask.mean() < 0.25
        diff = np.abs(bad.astype(int) - good.astype(int))[..., 0]
        changed = diff > 12
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert changed[~near].sum() == 0  # nothing changes away from the mask
        assert diff[mask].mean() > 15  # and the masked region did change visibly


def test_crops_vary_and_are_gray_rgb():
    a, _ = render_texture_sample("gravel", None, 1, 64, split="train")
    b, _ = render_texture_sample("gravel", None, 2, 64, split="train")
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert (a[..., 0] == a[..., 1]).all() and not np.array_equal(a, b)
    with pytest.raises(ConfigError, match="texture"):
        render_texture_sample("marble")
    with pytest.raises(ConfigError, match="defect"):
        render_texture_sample("brick", "hole")


def test_generate_textures_deterministic_and_loads(tmp_path):
    kw = dict(texture="grass", n_train=2, n_test_good=1, n_test_bad=3, size=48)
    a = generate_textures(tmp_path / "a", seed=0, **kw)
    b = generate_textures(tmp_path / "b", seed=0, **kw)
    c = generate_textures(tmp_path / "c", seed=1, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 2 + 1 + 3 + 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    splits = load_mvtec(tmp_path / "a", "grass", val_split_ratio=0)
    assert splits.defect_types == list(sorted(DEFECTS)) and splits.has_masks and len(splits.train) == 2


def test_cli(tmp_path):
    res = CliRunner().invoke(cli, [str(tmp_path), "--texture", "all", "--n-train", "1", "--n-test-good", "1",
                                   "--n-test-bad", "1", "--size", "40"])
    assert res.exit_code == 0, res.output
    for t in TEXTURES:
        assert (tmp_path / t / "ground_truth" / "scratch" / "000_mask.png").is_file()
