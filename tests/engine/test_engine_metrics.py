"""Metrics vs scikit-learn, and AUPRO vs a slow per-threshold, per-component reference."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn import metrics as skm

from fovea.engine import metrics as M
from fovea.errors import DataError


def _data(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s * 2) / 2  # few distinct values, many ties
    return s, y


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True), (3, False)])
def test_auroc_and_roc_match_sklearn(seed, ties):
    s, y = _data(seed, ties=ties)
    assert M.auroc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = M.roc_curve(s, y)
    rf, rt, rthr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rf)
    np.testing.assert_allclose(tpr, rt)
    np.testing.assert_array_equal(thr[1:], rthr[1:])


def test_auroc_all_tied_is_half_and_one_class_errors():
    assert M.auroc(np.ones(10), np.arange(10) % 2) == pytest.approx(0.5)
    with pytest.raises(DataError, match="all 5 samples are normal"):
        M.auroc(np.arange(5.0), np.zeros(5))
    with pytest.raises(DataError, match="binary"):
        M.auroc(np.arange(3.0), [0, 1, 2])
    with pytest.raises(DataError, match="NaN"):
        M.auroc([0.1, np.nan], [0, 1])


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True)])
def test_precision_recall_and_f1_match_sklearn(seed, ties):
    s, y = _data(seed, ties=ties)
    p, r, t = M.precision_recall_curve(s, y)
    rp, rr, rt = skm.precision_recall_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(p, rp)
    np.testing.assert_allclose(r, rr)
    np.testing.assert_array_equal(t, rt)

    thr, f1 = M.best_f1_threshold(s, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref_f1 = np.nan_to_num(2 * rp * rr / (rp + rr)).max()
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    # the threshold realises that F1 with strict and non-strict comparison alike
    assert skm.f1_score(y, s > thr) == pytest.approx(f1, abs=1e-12)
    assert skm.f1_score(y, s >= thr) == pytest.approx(f1, abs=1e-12)
    assert M.f1_max(s, y) == f1
    pred = s > np.median(s)
    assert M.f1_score(pred, y) == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert M.f1_score(np.zeros(4, bool), np.zeros(4, bool)) == 0.0


def test_best_f1_threshold_when_all_positive_is_below_min():
    s = np.array([1.0, 2.0, 3.0])
    thr, f1 = M.best_f1_threshold(s, [1, 1, 1])
    assert thr < 1.0 and f1 == 1.0


def test_pixel_auroc_matches_sklearn_on_flattened_pixels():
    rng = np.random.default_rng(5)
    masks = rng.random((3, 20, 24)) < 0.1
    maps = (rng.normal(size=masks.shape) + masks).astype(np.float32)
    maps = np.round(maps, 1)  # ties
    ref = skm.roc_auc_score(masks.ravel(), maps.astype(np.float32).ravel())
    assert M.pixel_auroc(maps, masks) == pytest.approx(ref, abs=1e-9)
    with pytest.raises(DataError, match="same"):
        M.pixel_auroc(maps, masks[:, :10])
    # images of different sizes as lists
    lm, lg = [maps[0], maps[1, :10]], [masks[0], masks[1, :10]]
    ref = skm.roc_auc_score(np.r_[lg[0].ravel(), lg[1].ravel()], np.r_[lm[0].ravel(), lm[1].ravel()])
    assert M.pixel_auroc(lm, lg) == pytest.approx(ref, abs=1e-9)


# ---------------------------------------------------------------- AUPRO


def _slow_pro_curve(maps, masks, thresholds, connectivity=8):
    """Obviously-correct PRO curve: loop over thresholds, then over every GT component."""
    st = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    comps = []
    for k in range(len(masks)):
        lab, n = ndimage.label(masks[k], structure=st)
        comps += [(k, lab == i) for i in range(1, n + 1)]
    n_normal = sum((~g).sum() for g in masks)
    fprs, pros = [0.0], [0.0]
    for t in thresholds:
        pred = [np.asarray(m, np.float64) >= t for m in maps]
        fprs.append(sum((p & ~g).sum() for p, g in zip(pred, masks)) / n_normal)
        pros.append(np.mean([(pred[k] & c).sum() / c.sum() for k, c in comps]))
    return np.array(fprs), np.array(pros)


def _slow_area(fpr, pro, limit):
    """Integrate PRO over FPR up to `limit` by dense sampling of the piecewise-linear curve."""
    xs = np.linspace(0, limit, 200001)
    # the curve is monotone in fpr; np.interp on (fpr, pro) takes the last point of vertical jumps,
    # which matches the area of the piecewise-linear curve
    ys = np.interp(xs, fpr, pro)
    return np.trapezoid(ys, xs) / limit


def _random_case(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[0, 10:12, 10:11] = True          # second, small region
    masks[1, 5:6, 5:6] = True
    masks[1, 6:7, 6:7] = True              # diagonal neighbour: one region at 8-conn, two at 4-conn
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    return np.round(maps, 1).astype(np.float32), masks  # ties on purpose


@pytest.mark.parametrize("connectivity", [8, 4])
def test_pro_curve_matches_slow_reference(connectivity):
    maps, masks = _random_case(0)
    thr = np.unique(maps)[::-1]
    rf, rp = _slow_pro_curve(maps, masks, thr, connectivity)
    fpr, pro, t = M.pro_curve(maps, masks, connectivity=connectivity)
    np.testing.assert_array_equal(t[1:], thr)
    np.testing.assert_allclose(fpr, rf, atol=1e-12)
    np.testing.assert_allclose(pro, rp, atol=1e-12)
    for limit in (0.3, 0.05, 1.0):
        assert M.aupro(maps, masks, limit, connectivity=connectivity) == pytest.approx(
            _slow_area(rf, rp, limit), abs=1e-6)


def test_pro_curve_on_images_of_different_sizes():
    maps, masks = _random_case(2)
    lm, lg = [maps[0], maps[1, :9, :13], maps[2, 3:]], [masks[0], masks[1, :9, :13], masks[2, 3:]]
    thr = np.unique(np.concatenate([m.ravel() for m in lm]))[::-1]
    rf, rp = _slow_pro_curve(lm, lg, thr)
    fpr, pro, _ = M.pro_curve(lm, lg)
    np.testing.assert_allclose(fpr, rf, atol=1e-12)
    np.testing.assert_allclose(pro, rp, atol=1e-12)


def test_binned_pro_curve_matches_slow_reference_at_same_thresholds():
    maps, masks = _random_case(1)
    fpr, pro, t = M.pro_curve(maps, masks, num_thresholds=50)
    rf, rp = _slow_pro_curve(maps, masks, t[1:])
    np.testing.assert_allclose(fpr, rf, atol=1e-12)
    np.testing.assert_allclose(pro, rp, atol=1e-12)
    assert M.aupro(maps, masks, num_thresholds=2000) == pytest.approx(M.aupro(maps, masks), abs=2e-3)


def test_aupro_hand_made_cases():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 1:3, 1:3] = True     # region A: 4 px
    masks[1, 4:9, 4:9] = True     # region B: 25 px
    # perfect map -> 1.0
    assert M.aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    # inverted map -> 0.0
    assert M.aupro((~masks).astype(np.float32), masks) == pytest.approx(0.0)
    # constant map: curve jumps (0,0)->(1,1) linearly: area 0.3^2/2 / 0.3 = 0.15
    assert M.aupro(np.zeros(masks.shape, np.float32), masks) == pytest.approx(0.15)
    # A found at top score, B at the very bottom: PRO = 0.5 for any FPR < 1 (per region, not per pixel)
    maps = np.full(masks.shape, 0.5, np.float32)
    maps[0, 1:3, 1:3] = 1.0
    maps[1, 4:9, 4:9] = 0.0
    assert M.aupro(maps, masks) == pytest.approx(0.5)
    with pytest.raises(DataError, match="at least one anomalous region"):
        M.aupro(maps, np.zeros_like(masks))
