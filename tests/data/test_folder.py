"""Folder / MVTec loading: layouts, every error path naming its files, seeded splits, the Dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fovea.data import AnomalyDataset, FolderSpec, Sample, load_folder, load_mvtec
from fovea.errors import DataError, ImageReadError, MaskMismatchError
from fovea.io import write_image


def _img(path: Path, seed: int, hw=(24, 32)):
    rgb = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    write_image(path, rgb)
    return rgb


def _mask(path: Path, hw=(24, 32), box=(4, 6, 10, 14)):
    m = np.zeros(hw, bool)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = True
    write_image(path, m)
    return m


def make_folder(root: Path, n_good=10, defects=(("scratch", 3), ("stain", 2)), mask_layout="per_defect"):
    for i in range(n_good):
        _img(root / "good" / f"g{i:02d}.png", i)
    for d, (name, n) in enumerate(defects):
        for i in range(n):
            _img(root / name / f"{name}{i}.png", 100 + 10 * d + i)
            if mask_layout == "per_defect":
                _mask(root / "masks" / name / f"{name}{i}.png")
            elif mask_layout == "flat":
                _mask(root / "masks" / f"{name}{i}_mask.png")
    return root


def spec(root, **kw):
    base = dict(root=root, normal_dir="good", abnormal_dirs=["scratch", "stain"], mask_dir="masks")
    base.update(kw)
    return FolderSpec(**base)


@pytest.mark.parametrize("layout", ["per_defect", "flat"])
def test_folder_layout_and_counts(tmp_path, layout):
    make_folder(tmp_path, mask_layout=layout)
    s = load_folder(spec(tmp_path, normal_split_ratio=0.2, val_split_ratio=0.5, seed=3))
    assert len(s.train) == 8 and all(x.label == 0 and x.defect_type == "good" for x in s.train)
    everything = s.val + s.test
    assert len(everything) == 2 + 3 + 2
    # stratified: half of each group (rounded half up) goes to val
    count = lambda xs, t: sum(x.defect_type == t for x in xs)  # noqa: E731
    assert (count(s.val, "good"), count(s.val, "scratch"), count(s.val, "stain")) == (1, 2, 1)
    for x in everything:
        if x.label == 1:
            assert x.mask_path is not None and x.mask_path.parent.name in ("masks", x.defect_type)
            assert x.mask_path.stem.replace("_mask", "") == x.path.stem
        else:
            assert x.mask_path is None
    assert s.has_masks and s.defect_types == ["scratch", "stain"] and s.skipped == []
    names = {x.path for x in s.train} | {x.path for x in everything}
    assert len(names) == 10 + 5  # no image lost or duplicated
    assert "train: 8 images" in s.summary()


def test_same_as_test_and_normal_test_dir(tmp_path):
    make_folder(tmp_path)
    for i in range(4):
        _img(tmp_path / "good_test" / f"t{i}.png", 50 + i)
    for mode in ("same_as_test", 0, 0.0):
        s = load_folder(spec(tmp_path, normal_test_dir="good_test", val_split_ratio=mode))
        assert s.val == s.test and s.val_mode == "same_as_test"
        assert len(s.train) == 10 and sum(x.label == 0 for x in s.test) == 4


def test_split_determinism_and_ratios(tmp_path):
    make_folder(tmp_path, n_good=20)
    a = load_folder(spec(tmp_path, normal_split_ratio=0.25, seed=7))
    b = load_folder(spec(tmp_path, normal_split_ratio=0.25, seed=7))
    c = load_folder(spec(tmp_path, normal_split_ratio=0.25, seed=8))
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert {x.path for x in a.train} != {x.path for x in c.train}
    assert len(a.train) == 15
    test_normals = [x for x in a.val + a.test if x.label == 0]
    assert len(test_normals) == 5
    assert not {x.path for x in a.train} & {x.path for x in test_normals}
    # changing only the validation ratio keeps the train/test normal split
    d = load_folder(spec(tmp_path, normal_split_ratio=0.25, seed=7, val_split_ratio=0.3))
    assert d.train == a.train


@pytest.mark.parametrize("case", ["missing", "empty", "other_ext"])
def test_bad_normal_dir(tmp_path, case):
    make_folder(tmp_path)
    target = tmp_path / "normal"
    if case != "missing":
        target.mkdir()
    if case == "other_ext":
        (target / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError) as info:
        load_folder(spec(tmp_path, normal_dir="normal"))
    msg = str(info.value)
    assert str(target) in msg and "Fix" in msg
    if case == "other_ext":
        assert ".gif" in msg


def test_mask_image_mismatch_lists_both_sides(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "masks" / "scratch" / "scratch1.png").unlink()
    _mask(tmp_path / "masks" / "scratch" / "orphan.png")
    with pytest.raises(MaskMismatchError) as info:
        load_folder(spec(tmp_path))
    msg = str(info.value)
    assert "scratch1.png" in msg and "orphan.png" in msg and "without a mask" in msg


def test_missing_defect_mask_subfolder(tmp_path):
    make_folder(tmp_path)
    for p in (tmp_path / "masks" / "stain").iterdir():
        p.unlink()
    (tmp_path / "masks" / "stain").rmdir()
    with pytest.raises(MaskMismatchError, match="stain"):
        load_folder(spec(tmp_path))


@pytest.mark.parametrize("verify", [True, False])
def test_wrong_size_mask(tmp_path, verify):
    make_folder(tmp_path)
    bad = tmp_path / "masks" / "stain" / "stain1.png"
    _mask(bad, hw=(20, 32))
    with pytest.raises(MaskMismatchError) as info:
        load_folder(spec(tmp_path, verify_images=verify))
    msg = str(info.value)
    assert str(bad) in msg and str(tmp_path / "stain" / "stain1.png") in msg
    assert "32x20" in msg and "32x24" in msg


def test_wrong_size_mask_in_dataset(tmp_path):
    _img(tmp_path / "a.png", 0)
    _mask(tmp_path / "a_mask.png", hw=(12, 32))
    ds = AnomalyDataset([Sample(tmp_path / "a.png", 1, "x", tmp_path / "a_mask.png")], image_size=(16, 16))
    with pytest.raises(MaskMismatchError, match="a_mask.png.*32x12.*a.png.*32x24"):
        ds[0]


def test_corrupt_file_raises_or_is_skipped(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "good" / "g03.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    junk = tmp_path / "scratch" / "scratch2.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(ImageReadError) as info:
        load_folder(spec(tmp_path))
    assert str(bad) in str(info.value)
    s = load_folder(spec(tmp_path, skip_bad=True, normal_split_ratio=0.0))
    assert sorted(p for p, _ in s.skipped) == sorted([str(bad), str(junk)])
    assert all(reason for _, reason in s.skipped)
    assert len(s.train) == 9 and bad not in {x.path for x in s.train}
    assert sum(x.defect_type == "scratch" for x in s.val + s.test) == 2
    assert "skipped: 2" in s.summary()


def test_corrupt_mask_skips_its_image(tmp_path):
    make_folder(tmp_path)
    m = tmp_path / "masks" / "stain" / "stain0.png"
    m.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="stain0.png"):
        load_folder(spec(tmp_path))
    s = load_folder(spec(tmp_path, skip_bad=True))
    assert len(s.skipped) == 1 and s.skipped[0][0] == str(tmp_path / "stain" / "stain0.png")
    assert str(m) in s.skipped[0][1]


def test_dataset_items(tmp_path):
    make_folder(tmp_path)
    s = load_folder(spec(tmp_path, val_split_ratio="same_as_test"))
    ds = AnomalyDataset(s.test, image_size=(12, 16))
    bad = next(i for i, x in enumerate(s.test) if x.label == 1)
    good = next(i for i, x in enumerate(s.test) if x.label == 0)
    item = ds[bad]
    assert item["image"].shape == (3, 12, 16) and str(item["image"].dtype) == "torch.uint8"
    assert item["mask"].shape == (12, 16) and str(item["mask"].dtype) == "torch.bool"
    assert int(item["label"]) == 1 and item["has_mask"]
    # reference: OpenCV resize of the file itself
    src = cv2.cvtColor(cv2.imread(item["path"]), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(item["image"].numpy().transpose(1, 2, 0),
                                  cv2.resize(src, (16, 12), interpolation=cv2.INTER_AREA))
    ref = np.zeros((24, 32), np.uint8)
    ref[4:10, 6:14] = 1
    np.testing.assert_array_equal(item["mask"].numpy(),
                                  cv2.resize(ref, (16, 12), interpolation=cv2.INTER_NEAREST).astype(bool))
    g = ds[good]
    assert int(g["label"]) == 0 and not g["mask"].any()


def make_mvtec(root: Path, cat="widget"):
    c = root / cat
    for i in range(6):
        _img(c / "train" / "good" / f"{i:03d}.png", i)
    for i in range(2):
        _img(c / "test" / "good" / f"{i:03d}.png", 40 + i)
    for d in ("crack", "hole"):
        for i in range(2):
            _img(c / "test" / d / f"{i:03d}.png", 60 + i)
            _mask(c / "ground_truth" / d / f"{i:03d}_mask.png")
    return c


def test_load_mvtec(tmp_path):
    c = make_mvtec(tmp_path)
    s = load_mvtec(tmp_path, "widget", val_split_ratio="same_as_test")
    assert len(s.train) == 6 and len(s.test) == 6 and s.val == s.test
    for x in s.test:
        if x.label:
            assert x.mask_path == c / "ground_truth" / x.defect_type / f"{x.path.stem}_mask.png"
    assert s.defect_types == ["crack", "hole"]
    assert load_mvtec(c).train == s.train  # category folder given directly
    with pytest.raises(DataError, match="widget"):
        load_mvtec(tmp_path, "gadget")
