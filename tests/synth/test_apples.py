"""Synthetic apples: determinism, labels consistent with damage flags, visibility, file layouts."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fovea.errors import ConfigError
from fovea.cli.synth import apples_cmd as cli
from fovea.synth.apples import (CLASS_NAMES, DAMAGE_CLASS, draw_apple, generate_apple_crops,
                                generate_apple_scenes, paint_apple, render_apple, sample_apple)


def test_render_is_deterministic_by_seed():
    a = render_apple(np.random.default_rng(3), 96, damaged=True)
    b = render_apple(np.random.default_rng(3), 96, damaged=True)
    c = render_apple(np.random.default_rng(4), 96, damaged=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("damaged", [False, True])
def test_labels_match_damage_flags(damaged):
    for i in range(12):
        img, lab, meta = render_apple(np.random.default_rng([1, i]), 96, damaged=damaged)
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and lab.shape == (96, 96)
        present = set(np.unique(lab).tolist())
        assert {0, 1} <= present <= set(range(len(CLASS_NAMES)))
        damage_present = present - {0, 1}
        assert meta["damaged"] == damaged
        if not damaged:
            assert damage_present == set() and meta["damage_types"] == []
        else:
            expected = {DAMAGE_CLASS[t] for t in meta["damage_types"]}
            assert damage_present and damage_present <= expected
            # every damage is drawn: at least a few pixels of each listed type
            for t in meta["damage_types"]:
                assert (lab == DAMAGE_CLASS[t]).sum() >= 10, (i, t)


def test_damage_is_visible_against_the_surrounding_skin():
    """Damage pixels differ clearly in colour from good skin within a few pixels of them."""
    for i in range(10):
        img, lab, meta = render_apple(np.random.default_rng([2, i]), 128, damaged=True)
        dmg = lab >= 2
        ring = cv2.dilate(dmg.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & (lab == 1)
        diff = np.abs(img[dmg].astype(float).mean(0) - img[ring].astype(float).mean(0)).max()
        assert diff > 15, (i, meta["damage_types"], diff)


def test_paint_same_spec_anywhere_gives_shifted_identical_labels():
    spec = sample_apple(np.random.default_rng(0), damaged=True)
    c1 = np.zeros((120, 160, 3), np.uint8)
    c2 = np.zeros((120, 160, 3), np.uint8)
    p1 = paint_apple(c1, (50, 60), 30, spec, shadow=False)
    p2 = paint_apple(c2, (90, 60), 30, spec, shadow=False)
    assert np.array_equal(p1.label, p2.label) and p2.x0 - p1.x0 == 40
    assert np.array_equal(c1[:, 10:100], c2[:, 50:140])
    # half outside the canvas: clipped, never fails; labels only where the canvas is
    c3 = np.zeros((120, 160, 3), np.uint8)
    p3 = draw_apple(c3, (-5, 60), 30, np.random.default_rng(1))
    assert p3.x0 == 0 and 0 < p3.mask.sum() < np.pi * 30 ** 2 * 0.7
    full = np.zeros((120, 160), np.int64)
    p3.paste_into(full)
    assert full.sum() > 0 and full[:, 40:].sum() == 0


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError, match="damage type"):
        sample_apple(np.random.default_rng(0), damaged=True, damage_types=("rot",))
    with pytest.raises(ConfigError, match="split"):
        generate_apple_crops("/nonexistent", n_per_class=2, split=(0.5, 0.5, 0.5))


def test_crops_layout_and_identical_bytes(tmp_path):
    a = generate_apple_crops(tmp_path / "a", n_per_class=4, size=64, seed=5, split=(0.5, 0.25, 0.25))
    b = generate_apple_crops(tmp_path / "b", n_per_class=4, size=64, seed=5, split=(0.5, 0.25, 0.25))
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*.png"))
    assert len(files) == 8
    assert {f.rsplit("/", 1)[0] for f in files} == {f"{s}/{c}" for s in ("train", "val", "test")
                                                   for c in ("good", "damaged")}
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    meta = [json.loads(line) for line in (a / "meta.jsonl").read_text().splitlines()]
    assert all(m["damaged"] == ("/damaged/" in m["file"]) for m in meta)


def test_scenes_layout_and_cli(tmp_path):
    res = CliRunner().invoke(cli, [str(tmp_path / "s"), "--kind", "scenes", "--n", "2", "--size", "96",
                                   "--seed", "1"])
    assert res.exit_code == 0, res.output
    out = generate_apple_scenes(tmp_path / "t", n=2, size=96, seed=1)
    classes = json.loads((out / "classes.json").read_text())
    assert classes["classes"] == list(CLASS_NAMES)
    for name in ("00000.png", "00001.png"):
        assert (out / "images" / name).read_bytes() == (tmp_path / "s" / "images" / name).read_bytes()
        mask = cv2.imread(str(out / "masks" / name), cv2.IMREAD_UNCHANGED)
        img = cv2.imread(str(out / "images" / name))
        assert mask.shape == img.shape[:2] and mask.max() < len(CLASS_NAMES) and (mask >= 1).any()
