"""Segmentation data sets list files with fovea.io.list_images: unreadable files raise or, with
skip_bad, are left out and listed; lossy masks are refused."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fovea.errors import DataError, ImageReadError
from fovea.segment.data import CocoPolygonDataset, MaskFolderDataset


def _pair(root, stem, value):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{stem}.png"), np.full((8, 10, 3), 60 * value, np.uint8))
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), np.full((8, 10), value, np.uint8))


def test_mask_folder_skips_and_lists_unreadable_pairs(tmp_path):
    _pair(tmp_path, "a", 1)
    _pair(tmp_path, "b", 2)
    (tmp_path / "images" / "c.png").write_bytes(b"")  # unreadable image with a good mask
    cv2.imwrite(str(tmp_path / "masks" / "c.png"), np.zeros((8, 10), np.uint8))
    with pytest.raises(ImageReadError, match="c.png"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=3)
    ds = MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=3, skip_bad=True)
    assert [p.name for p, _ in ds.pairs] == ["a.png", "b.png"]
    assert ds.skipped == [(str(tmp_path / "images" / "c.png"), "the file is empty (0 bytes)")]
    img, mask = ds.load(1)
    assert img.shape == (8, 10, 3) and int(mask[0, 0]) == 2


def test_lossy_masks_are_refused(tmp_path):
    _pair(tmp_path, "a", 1)
    (tmp_path / "masks" / "a.png").unlink()
    cv2.imwrite(str(tmp_path / "masks" / "a.jpg"), np.full((8, 10), 1, np.uint8))
    with pytest.raises(DataError, match="lossy format.*Fix: save masks as PNG"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=2)


def test_coco_skips_and_lists_unreadable_images(tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "bad.png").write_text("not an image")
    coco = {"categories": [{"id": 7, "name": "apple"}],
            "images": [{"id": 1, "file_name": "ok.png", "height": 20, "width": 20},
                       {"id": 2, "file_name": "bad.png", "height": 20, "width": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(ImageReadError, match="bad.png"):
        CocoPolygonDataset(tmp_path / "coco.json")
    ds = CocoPolygonDataset(tmp_path / "coco.json", skip_bad=True)
    assert len(ds) == 1 and [p for p, _ in ds.skipped] == [str(tmp_path / "bad.png")]
    _, mask = ds.load(0)
    assert mask[5, 5] == 1 and mask[15, 15] == 0  # inside / outside the square polygon
