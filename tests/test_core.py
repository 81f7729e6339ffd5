"""fovea.core: every result type round-trips through to_dict/from_dict (and JSON); the Detections
adapters against hand-built masks and boxes whose components are known; the one image check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fovea.core import AnomalyResult, ClassResult, Detections, Frame, SegResult, check_image
from fovea.errors import DataError


def _json(d: dict) -> dict:
    return json.loads(json.dumps(d))  # what a predictions.jsonl line gives back


def _anomaly() -> AnomalyResult:
    amap = np.zeros((6, 8), np.float32)
    amap[1:3, 1:4] = 0.8   # component A: rows 1-2, cols 1-3 -> box [1, 1, 4, 3]
    amap[4, 6:8] = 0.9     # component B: row 4, cols 6-7 -> box [6, 4, 8, 5]
    mask = amap > 0.5
    boxes = np.array([[6, 4, 8, 5], [1, 1, 4, 3]], np.float32)  # highest score first, as the predictor orders
    return AnomalyResult(score=0.7, label=True, anomaly_map=amap, mask=mask, boxes=boxes,
                         box_scores=np.array([0.9, 0.8], np.float32), raw_score=3.25, image_path="a.png")


def test_anomaly_result_round_trip():
    r = _anomaly()
    back = AnomalyResult.from_dict(_json(r.to_dict(include_maps=True)))
    assert (back.score, back.label, back.raw_score, back.image_path) == (0.7, True, 3.25, "a.png")
    np.testing.assert_array_equal(back.anomaly_map, r.anomaly_map)
    np.testing.assert_array_equal(back.mask, r.mask)
    np.testing.assert_array_equal(back.boxes, r.boxes)
    np.testing.assert_array_equal(back.box_scores, r.box_scores)
    slim = _json(r.to_dict())  # predictions.jsonl: no maps; scalars and boxes survive, maps are empty
    assert slim["kind"] == "anomaly" and slim["anomalous_pixels"] == 8
    back = AnomalyResult.from_dict(slim)
    assert back.anomaly_map.shape == (0, 0) and back.mask.shape == (0, 0)
    np.testing.assert_array_equal(back.boxes, r.boxes)


def test_class_result_round_trip():
    r = ClassResult(probs=np.array([0.1, 0.7, 0.2], np.float32), class_names=("a", "b", "c"), image_path="x.png")
    d = _json(r.to_dict())
    assert (d["kind"], d["class_id"], d["class_name"]) == ("classify", 1, "b")
    back = ClassResult.from_dict(d)
    np.testing.assert_array_equal(back.probs, r.probs)
    assert back.class_names == r.class_names and back.image_path == "x.png"
    assert back.margin == pytest.approx(0.5)


def test_seg_result_round_trip():
    cmap = np.array([[0, 0, 1], [2, 2, 1]], np.int64)
    probs = np.random.default_rng(0).random((3, 2, 3)).astype(np.float32)
    r = SegResult(class_map=cmap, probs=probs, class_names=("bg", "apple", "leaf"), image_path="s.png")
    d = _json(r.to_dict(include_maps=True))
    assert d["kind"] == "segment" and d["pixel_counts"] == {"bg": 2, "apple": 2, "leaf": 2}
    back = SegResult.from_dict(d)
    np.testing.assert_array_equal(back.class_map, cmap)
    np.testing.assert_array_equal(back.probs, probs)
    assert back.class_names == r.class_names and back.image_path == "s.png"
    with pytest.raises(DataError, match="include_maps=True"):
        SegResult.from_dict(_json(r.to_dict()))


def test_detections_round_trip_with_masks_and_data():
    mask = np.zeros((2, 4, 5), bool)
    mask[0, 1:3, 1:3] = True
    mask[1, 0, 4] = True
    det = Detections(xyxy=[[1, 1, 3, 3], [4, 0, 5, 1]], mask=mask, confidence=[0.5, 0.25], class_id=[2, 7],
                     tracker_id=[11, 12], data={"class_name": np.array(["x", "y"])})
    back = Detections.from_dict(_json(det.to_dict(include_maps=True)))
    np.testing.assert_array_equal(back.xyxy, det.xyxy)
    np.testing.assert_array_equal(back.mask, mask)
    np.testing.assert_array_equal(back.confidence, det.confidence)
    np.testing.assert_array_equal(back.class_id, det.class_id)
    np.testing.assert_array_equal(back.tracker_id, det.tracker_id)
    assert list(back.data["class_name"]) == ["x", "y"]
    empty = Detections.from_dict(_json(Detections.empty().to_dict(include_maps=True)))
    assert len(empty) == 0 and empty.mask is None


def test_from_dict_refuses_another_kind():
    with pytest.raises(DataError, match="'classify'"):
        AnomalyResult.from_dict({"kind": "classify", "score": 1.0, "label": True})


def test_detections_from_anomaly_pairs_each_box_with_its_component():
    r = _anomaly()
    det = Detections.from_anomaly(r)
    assert len(det) == 2
    np.testing.assert_array_equal(det.xyxy, r.boxes)
    np.testing.assert_array_equal(det.confidence, r.box_scores)
    assert list(det.class_id) == [0, 0] and list(det.data["class_name"]) == ["anomaly", "anomaly"]
    expected_b = np.zeros((6, 8), bool)
    expected_b[4, 6:8] = True
    expected_a = np.zeros((6, 8), bool)
    expected_a[1:3, 1:4] = True
    np.testing.assert_array_equal(det.mask[0], expected_b)
    np.testing.assert_array_equal(det.mask[1], expected_a)
    np.testing.assert_array_equal(det.area, [2, 6])
    # a box that is no component of the mask is refused, naming the box
    bad = AnomalyResult(**{**r.__dict__, "boxes": np.array([[0, 0, 2, 2]], np.float32),
                           "box_scores": np.array([0.6], np.float32)})
    with pytest.raises(DataError, match=r"\[0.0, 0.0, 2.0, 2.0\]"):
        Detections.from_anomaly(bad)
    # without its mask (a slim JSON record) the boxes still come through
    slim = Detections.from_anomaly(AnomalyResult.from_dict(_json(r.to_dict())))
    assert slim.mask is None and len(slim) == 2


def test_detections_from_segmentation_known_components():
    cmap = np.zeros((7, 9), np.int64)
    cmap[1:3, 1:3] = 1        # class 1, component 1: box [1, 1, 3, 3], 4 px
    cmap[5, 6:9] = 1          # class 1, component 2: box [6, 5, 9, 6], 3 px
    cmap[3:6, 0:2] = 2        # class 2: box [0, 3, 2, 6], 6 px
    cmap[0, 8] = 2            # class 2, a single pixel: box [8, 0, 9, 1]
    probs = np.zeros((3, 7, 9), np.float32)
    probs[1][cmap == 1] = 0.75
    probs[2][cmap == 2] = 0.5
    probs[2, 0, 8] = 0.9      # class-2 single pixel: mean 0.9
    r = SegResult(class_map=cmap, probs=probs, class_names=("bg", "apple", "leaf"))
    det = Detections.from_segmentation(r)
    assert len(det) == 4
    # by class, then by first pixel in raster order
    np.testing.assert_array_equal(det.xyxy, [[1, 1, 3, 3], [6, 5, 9, 6], [8, 0, 9, 1], [0, 3, 2, 6]])
    assert list(det.class_id) == [1, 1, 2, 2]
    assert list(det.data["class_name"]) == ["apple", "apple", "leaf", "leaf"]
    np.testing.assert_allclose(det.confidence, [0.75, 0.75, 0.9, 0.5])
    np.testing.assert_array_equal(det.area, [4, 3, 1, 6])
    for m, c in zip(det.mask, det.class_id):
        assert (cmap[m] == c).all()
    assert np.logical_or.reduce(det.mask).sum() == (cmap > 0).sum()  # every foreground pixel, once
    big = Detections.from_segmentation(r, min_area_px=3)
    assert list(big.area) == [4, 3, 6]
    # 4-connectivity splits a diagonal pair that 8-connectivity joins
    diag = SegResult(class_map=np.array([[1, 0], [0, 1]], np.int64))
    assert len(Detections.from_segmentation(diag)) == 1
    assert len(Detections.from_segmentation(diag, connectivity=4)) == 2
    assert np.allclose(Detections.from_segmentation(diag).confidence, 1.0)  # no probabilities
    assert len(Detections.from_segmentation(SegResult(class_map=np.zeros((3, 3), np.int64)))) == 0


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8), [[1, 2, 3]]])
def test_check_image_names_the_input_and_the_fix(bad):
    with pytest.raises(DataError, match="cam0.*uint8 RGB.*Fix"):
        check_image(bad, "cam0")
    with pytest.raises(DataError, match="Frame.image"):
        Frame(bad)
    ok = np.zeros((2, 3, 3), np.uint8)
    assert check_image(ok) is ok
