"""Segmentation metrics vs hand-computed confusion matrices; data set checks and errors; overlays."""

import json

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fovea.errors import DataError, MaskMismatchError
from fovea.segment.data import CocoPolygonDataset, MaskFolderDataset, split_indices
from fovea.segment.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, summarize
from fovea.segment.overlay import overlay, palette


def test_metrics_match_hand_computed_confusion_matrix():
    pred = np.array([[0, 1, 1], [2, 2, 0], [1, 1, 2]])
    target = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]])
    cm = confusion_matrix(pred, target, 3)
    # rows = truth: class 0 -> predicted 0,0,1; class 1 -> 1,1; class 2 -> 1,2,2,2
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 3]]
    np.testing.assert_allclose(iou_per_class(cm), [2 / 3, 2 / 4, 3 / 4])
    assert mean_iou(cm) == pytest.approx((2 / 3 + 0.5 + 0.75) / 3)
    assert pixel_accuracy(cm) == pytest.approx(7 / 9)


def test_absent_class_is_nan_and_ignored_in_mean_and_ignore_index():
    cm = confusion_matrix([0, 0, 1, 1], [0, 0, 1, 0], 3)
    ious = iou_per_class(cm)
    assert np.isnan(ious[2])
    assert mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 2)
    cm2 = confusion_matrix([0, 1, 1, 1], [0, 255, 1, 255], 2, ignore_index=255)
    assert cm2.tolist() == [[1, 0], [0, 1]]
    assert summarize(cm2, ("bg", "fg"))["iou"] == {"bg": 1.0, "fg": 1.0}


def test_confusion_matrix_matches_sklearn_on_random_maps():
    rng = np.random.default_rng(0)
    p, t = rng.integers(0, 5, (40, 50)), rng.integers(0, 5, (40, 50))
    np.testing.assert_array_equal(confusion_matrix(p, t, 5), sk_confusion_matrix(t.ravel(), p.ravel(), labels=range(5)))
    with pytest.raises(DataError, match="outside"):
        confusion_matrix(p, t, 4)


def _write_pair(root, stem, img, mask):
    (root / "images").mkdir(exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{stem}.png"), img)
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)


def test_mask_folder_dataset_and_its_errors(tmp_path):
    img = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 2
    _write_pair(tmp_path, "a", img, mask)
    ds = MaskFolderDataset(tmp_path / "images", tmp_path / "masks", class_names=("bg", "x", "y"), size=(20, 30))
    item = ds[0]
    assert item["image"].shape == (3, 20, 30) and item["target"].dtype == torch.int64
    assert int((item["target"] == 2).sum()) == 50

    _write_pair(tmp_path, "b", img, np.zeros((21, 30), np.uint8))  # wrong size
    ds = MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=3)
    with pytest.raises(MaskMismatchError, match="b.png.*30x20.*30x21"):
        ds[1]
    _write_pair(tmp_path, "b", img, np.full((20, 30), 7, np.uint8))  # class out of range
    with pytest.raises(DataError, match="b.png.*class index 7"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=3)[1]
    cv2.imwrite(str(tmp_path / "images" / "c.png"), img)  # image without mask
    with pytest.raises(MaskMismatchError, match="c.png"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=3)
    (tmp_path / "images" / "c.png").unlink()
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 2] = 1
    cv2.imwrite(str(tmp_path / "masks" / "b.png"), colour)
    with pytest.raises(DataError, match="colour image"):
        MaskFolderDataset(tmp_path / "images", tmp_path / "masks", num_classes=3)[1]


def test_coco_polygons_rasterise_to_expected_pixels(tmp_path):
    cv2.imwrite(str(tmp_path / "im.png"), np.zeros((12, 16, 3), np.uint8))
    coco = {"images": [{"id": 1, "file_name": "im.png", "height": 12, "width": 16}],
            "categories": [{"id": 7, "name": "oil"}, {"id": 3, "name": "sheen"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[2, 2, 5, 2, 5, 5, 2, 5]]},
                            {"id": 2, "image_id": 1, "category_id": 7,
                             "segmentation": [[10, 1, 13, 1, 13, 2, 10, 2]]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    ds = CocoPolygonDataset(tmp_path / "c.json", size=(12, 16))
    assert ds.class_names == ("background", "sheen", "oil")  # categories sorted by id
    _, mask = ds.load(0)
    expected = np.zeros((12, 16), np.int64)
    expected[2:6, 2:6] = 1   # fillPoly includes the polygon's boundary pixels
    expected[1:3, 10:14] = 2
    np.testing.assert_array_equal(mask, expected)
    coco["annotations"][0]["segmentation"] = {"counts": [1, 2], "size": [12, 16]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="RLE"):
        CocoPolygonDataset(tmp_path / "c.json")


def test_split_indices_is_seeded_and_disjoint():
    a, b = split_indices(10, 0.3, seed=1)
    assert len(b) == 3 and not set(a) & set(b) and sorted(a + b) == list(range(10))
    assert split_indices(10, 0.3, seed=1) == (a, b)


def test_overlay_leaves_background_and_input_untouched():
    img = np.full((8, 8, 3), 200, np.uint8)
    cm = np.zeros((8, 8), np.int64)
    cm[2:6, 2:6] = 1
    out = overlay(img, cm, alpha=0.5, outline=False)
    assert (img == 200).all() and (out[0, 0] == 200).all()
    np.testing.assert_array_equal(out[3, 3], np.round((200 + palette(2)[1].astype(float)) / 2).astype(np.uint8))
