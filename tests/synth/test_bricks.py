"""Bricks generator: determinism, masks exactly on the turned brick (checked by geometry), MVTec layout."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from fovea.data import load_mvtec
from fovea.errors import ConfigError
from fovea.io import read_image, read_mask
from fovea.cli.synth import bricks_cmd as cli
from fovea.synth.bricks import CATEGORIES, DEFECTS, Jitter, generate_bricks, render_bricks_scene

NO_JITTER = Jitter(place_shift=0, place_rot_deg=0, cam_shift=0, cam_rot_deg=0, cam_scale=0, gain=0,
                   gradient=0, noise_sigma=0)


def _axis_deg(mask: np.ndarray) -> float:
    """Long-axis orientation of a blob in [0, 180) degrees from the second moments of its pixels."""
    ys, xs = np.nonzero(mask)
    c = np.cov(np.stack([xs, ys]).astype(float))
    vals, vecs = np.linalg.eigh(c)
    vx, vy = vecs[:, np.argmax(vals)]
    return float(np.degrees(np.arctan2(vy, vx)) % 180.0)


def _ang_diff(a: float, b: float) -> float:
    """Smallest difference of two axis orientations (mod 180)."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def _brick_index(mask: np.ndarray) -> int:
    """Which corner the blob is in: 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    right, bottom = xs.mean() > w / 2, ys.mean() > h / 2
    return {(False, False): 0, (True, False): 1, (True, True): 2, (False, True): 3}[(right, bottom)]


@pytest.mark.parametrize("category", CATEGORIES)
def test_normal_scene_has_empty_mask(category):
    img, mask = render_bricks_scene(category, None, 3, 96)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and mask.shape == (96, 96)
    assert not mask.any()


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect", DEFECTS)
def test_mask_is_the_turned_brick_exact_geometry(category, defect):
    """Without nuisances the mask is a rectangle of the brick's size, turned by exactly the defect angle."""
    size = 256
    k = CATEGORIES.index(category) + 1
    turn = float(defect[3:])
    for seed in range(2):
        img, mask = render_bricks_scene(category, defect, seed, size, jitter=NO_JITTER)
        i = _brick_index(mask)
        expected = 90.0 if i < k else 0.0
        axis = _axis_deg(mask)
        assert min(_ang_diff(axis, expected + turn), _ang_diff(axis, expected - turn)) < 1.0
        # area of a 0.27 s x 0.12 s rectangle, within rasterisation error
        assert abs(mask.sum() / (0.27 * 0.12 * size * size) - 1) < 0.02
        # centroid at the brick's corner position (centre +- 0.215 s)
        ys, xs = np.nonzero(mask)
        sx, sy = [(-1, -1), (1, -1), (1, 1), (-1, 1)][i]
        assert abs(xs.mean() - (size / 2 + sx * 0.215 * size)) < 1.0
        assert abs(ys.mean() - (size / 2 + sy * 0.215 * size)) < 1.0
        # the mask covers brick-coloured (red) pixels
        r, g = img[..., 0].astype(int), img[..., 1].astype(int)
        assert np.mean(r[mask] - g[mask] > 60) > 0.95


def test_mask_with_jitter_stays_on_a_turned_red_brick():
    for seed in range(12):
        defect = DEFECTS[seed % 3]
        img, mask = render_bricks_scene("two_up", defect, seed, 128)
        i = _brick_index(mask)
        expected = 90.0 if i < 2 else 0.0
        turn = float(defect[3:])
        err = min(_ang_diff(_axis_deg(mask), expected + turn), _ang_diff(_axis_deg(mask), expected - turn))
        assert err < 6.0  # placement (1.5 deg) + camera (2 deg) + rasterisation
        assert _ang_diff(_axis_deg(mask), expected) > 20.0  # clearly not the correct orientation
        r, g = img[..., 0].astype(int), img[..., 1].astype(int)
        assert np.mean(r[mask] - g[mask] > 40) > 0.9


def test_non_square_and_seed_behaviour():
    a, ma = render_bricks_scene("one_up", "rot45", 5, (96, 160))
    b, mb = render_bricks_scene("one_up", "rot45", 5, (96, 160))
    c, _ = render_bricks_scene("one_up", "rot45", 6, (96, 160))
    assert a.shape == (96, 160, 3) and ma.any()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a, c)
    with pytest.raises(ConfigError, match="category"):
        render_bricks_scene("five_up")
    with pytest.raises(ConfigError, match="defect"):
        render_bricks_scene("one_up", "rot90")


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_bricks_deterministic_and_loads_with_mvtec(tmp_path):
    kw = dict(category="three_up", n_train=3, n_test_good=2, n_test_bad=4, size=64)
    a = generate_bricks(tmp_path / "a", seed=1, **kw)
    b = generate_bricks(tmp_path / "b", seed=1, **kw)
    c = generate_bricks(tmp_path / "c", seed=2, **kw)
    ta, tb, tc = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert ta == tb
    assert ta.keys() == tc.keys()
    assert all(ta[k] != tc[k] for k in ta if k.endswith(".png"))
    assert a == tmp_path / "a" / "three_up"
    splits = load_mvtec(tmp_path / "a", "three_up", val_split_ratio="same_as_test")
    assert len(splits.train) == 3 and len(splits.test) == 6 and splits.has_masks
    assert splits.defect_types == ["rot30", "rot45", "rot60"]
    for s in splits.test:
        img = read_image(s.path)
        assert img.shape == (64, 64, 3)
        if s.label:
            assert read_mask(s.mask_path).any() and s.mask_path.name == f"{s.path.stem}_mask.png"
    # counts change, earlier images stay identical (per-image seed streams)
    d = generate_bricks(tmp_path / "d", seed=1, **{**kw, "n_train": 5})
    assert (d / "train/good/002.png").read_bytes() == (a / "train/good/002.png").read_bytes()


def test_cli_all_categories(tmp_path):
    res = CliRunner().invoke(cli, [str(tmp_path), "--category", "all", "--n-train", "1", "--n-test-good", "1",
                                   "--n-test-bad", "1", "--size", "48", "--seed", "0"])
    assert res.exit_code == 0, res.output
    for c in CATEGORIES:
        assert (tmp_path / c / "train" / "good" / "000.png").is_file()
        assert (tmp_path / c / "ground_truth" / "rot30" / "000_mask.png").is_file()
