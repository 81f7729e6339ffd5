"""Recognition metrics vs scikit-learn / brute force; localization AP vs a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion

from fovea.video.metrics import (Segment, average_precision_at, confusion_matrix, fuse_views, localization_map,
                                 mean_class_accuracy, segments_from_scores, t_iou, temporal_nms, top_k_accuracy)


def test_recognition_metrics_match_references():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 7))
    y = rng.integers(0, 7, 200)
    for k in (1, 3, 5):
        brute = np.mean([y[i] in sorted(range(7), key=lambda c: -s[i, c])[:k] for i in range(200)])
        assert top_k_accuracy(s, y, k) == pytest.approx(brute)
    assert mean_class_accuracy(s, y) == pytest.approx(balanced_accuracy_score(y, s.argmax(1)))
    assert (confusion_matrix(s.argmax(1), y, 7) == sk_confusion(y, s.argmax(1), labels=range(7))).all()


def test_fuse_views_mean_softmax():
    v = np.log(np.array([[[0.7, 0.3], [0.1, 0.9]]]))
    assert fuse_views(v)[0].tolist() == pytest.approx([0.4, 0.6])


def test_ap_on_a_hand_worked_example():
    truths = [Segment(0, 10, 1), Segment(20, 30, 1)]
    dets = [Segment(0, 10, 1, 0.9), Segment(40, 50, 1, 0.8), Segment(20, 29, 1, 0.7)]
    # ranks: TP (P 1, R .5), FP (P .5), TP (P 2/3, R 1) -> envelope: 1 up to R .5, 2/3 up to R 1
    assert average_precision_at(dets, truths, 0.5) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision_at(dets, truths, 0.95) == pytest.approx(0.5)    # the 20-29 match has tIoU 0.9
    m = localization_map(dets, truths)
    assert m["mAP@0.5"] == pytest.approx(5 / 6) and 0.5 < m["mAP@0.5:0.95"] < 5 / 6
    assert t_iou((0, 10), (5, 15)) == pytest.approx(1 / 3)


def test_segments_from_scores_and_nms():
    p = np.zeros((10, 3))
    p[:, 0] = 1
    p[2:5, 1], p[2:5, 0] = 0.8, 0.2
    p[7:9, 2], p[7:9, 0] = 0.6, 0.4
    segs = segments_from_scores(p, fps=2.0, threshold=0.5)
    assert sorted((s.start_s, s.end_s, s.label) for s in segs) == [(1.0, 2.5, 1), (3.5, 4.5, 2)]
    kept = temporal_nms([Segment(0, 10, 1, 0.9), Segment(1, 10, 1, 0.8), Segment(1, 10, 2, 0.7)], 0.5)
    assert [(s.score, s.label) for s in kept] == [(0.9, 1), (0.7, 2)]
