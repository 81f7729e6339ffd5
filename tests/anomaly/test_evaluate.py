"""evaluate_anomaly vs scikit-learn on synthetic results; explicit notes for what is skipped."""

import numpy as np
import pytest
from sklearn import metrics as skm

from fovea.anomaly.evaluate import evaluate_anomaly
from fovea.engine.metrics import aupro
from fovea.anomaly.postprocess import Thresholds, make_anomaly_result
from fovea.errors import MaskMismatchError


def _case(seed=0, n=12, size=(16, 20)):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(int)
    masks, raw_maps = [], []
    for lb in labels:
        g = np.zeros(size, bool)
        if lb:
            y0, x0 = rng.integers(0, 10), rng.integers(0, 12)
            g[y0:y0 + 5, x0:x0 + 6] = True
        masks.append(g)
        raw_maps.append((rng.normal(size=size) + 2.0 * g).astype(np.float32))
    t = Thresholds(image_threshold=2.5, pixel_threshold=1.5, score_min=0.0, score_max=5.0, map_min=-3.0,
                   map_max=5.0)
    results = [make_anomaly_result(float(m.max()), m, t, f"img{i}.png") for i, m in enumerate(raw_maps)]
    return results, labels, masks, raw_maps


def test_evaluate_matches_sklearn():
    results, labels, masks, raw_maps = _case()
    out = evaluate_anomaly(results, labels, masks)
    raw = [r.raw_score for r in results]
    assert out["image_auroc"] == pytest.approx(skm.roc_auc_score(labels, raw))
    assert out["image_auroc_on"] == "raw_score"
    assert out["image_f1"] == pytest.approx(skm.f1_score(labels, [r.score > 0.5 for r in results]))
    flat_map = np.concatenate([r.anomaly_map.ravel() for r in results])
    flat_gt = np.concatenate([g.ravel() for g in masks])
    assert out["pixel_auroc"] == pytest.approx(skm.roc_auc_score(flat_gt, flat_map))
    assert out["pixel_f1"] == pytest.approx(skm.f1_score(flat_gt, flat_map > 0.5))
    assert out["aupro"] == pytest.approx(aupro(np.stack([r.anomaly_map for r in results]), np.stack(masks)))
    assert out["tp"] + out["fn"] == 6 and out["tn"] + out["fp"] == 6
    assert out["notes"] == []
    raw_out = evaluate_anomaly(results, labels, masks, raw_maps=raw_maps)
    assert raw_out["pixel_auroc"] == pytest.approx(skm.roc_auc_score(flat_gt, np.concatenate(
        [m.ravel() for m in raw_maps])))


def test_evaluate_without_masks_says_so_and_normal_masks_may_be_none():
    results, labels, masks, _ = _case(1)
    out = evaluate_anomaly(results, labels, None)
    assert out["pixel_auroc"] is None and out["aupro"] is None
    assert any("no ground-truth masks" in s for s in out["notes"])
    with_none = [None if lb == 0 else g for g, lb in zip(masks, labels)]
    assert evaluate_anomaly(results, labels, with_none)["pixel_auroc"] == pytest.approx(
        evaluate_anomaly(results, labels, masks)["pixel_auroc"])
    only_normal = evaluate_anomaly(results[:6], labels[:6], masks[:6])
    assert only_normal["image_auroc"] is None and len(only_normal["notes"]) == 3
    with pytest.raises(MaskMismatchError, match="img0.png"):
        evaluate_anomaly(results, labels, [g[:8] for g in masks])
