"""Anomaly-detection metrics in numpy: ROC/AUROC, precision-recall, F1, pixel AUROC and AUPRO.

All curves are computed exactly from one sort of the scores (ties handled like scikit-learn:
equal scores move together), so results match `sklearn.metrics` without depending on it or on
torchmetrics. Pixel metrics flatten (N, H, W) stacks in float32 to stay memory-friendly.
Convention: a sample is predicted anomalous when `score >= threshold` on curves; thresholds
returned by `best_f1_threshold` sit between two observed scores, so `>` and `>=` agree on them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fovea.errors import DataError

__all__ = [
    "roc_curve",
    "auroc",
    "precision_recall_curve",
    "f1_score",
    "f1_max",
    "best_f1_threshold",
    "pixel_auroc",
    "pro_curve",
    "aupro",
]


def _as_scores_labels(scores, labels, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Flatten and validate a score array and a binary label array of the same size."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.shape != y.shape:
        raise DataError(f"{what} shape {s.shape} differs from labels shape {y.shape}. "
                        "Fix: pass one label (or mask pixel) per score.")
    if s.size == 0:
        raise DataError(f"{what} is empty. Fix: evaluate on at least one normal and one anomalous sample.")
    if s.dtype.kind not in "fiub":
        raise DataError(f"{what} must be numeric, got dtype {s.dtype}")
    if s.dtype.kind != "f" or s.dtype.itemsize > 8:
        s = s.astype(np.float64)
    s = s.ravel()
    if not np.isfinite(s).all():
        bad = int((~np.isfinite(s)).sum())
        raise DataError(f"{what} holds {bad} NaN/inf values. Fix: check the model output for these samples.")
    if y.dtype != bool:
        uniq = np.unique(y)
        if not np.isin(uniq, (0, 1)).all():
            raise DataError(f"labels must be binary (0/1 or bool), got values {uniq[:10].tolist()}. "
                            "Fix: map normal to 0 and anomalous to 1 (masks: nonzero = anomalous).")
        y = y.astype(bool)
    return s, y.ravel()


def _binary_clf_curve(scores, labels, what: str = "scores"):
    """Counts at every distinct threshold, highest first.

    Returns (fps, tps, thresholds): fps[i], tps[i] = false/true positives when predicting
    `score >= thresholds[i]`; int64 counts, thresholds descending.
    """
    s, y = _as_scores_labels(scores, labels, what)
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    y_sorted = y[order]
    del order
    # last index of each run of equal scores
    ends = np.flatnonzero(s_sorted[1:] != s_sorted[:-1])
    ends = np.append(ends, s_sorted.size - 1)
    tps = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fps = ends.astype(np.int64) + 1 - tps
    return fps, tps, s_sorted[ends]


def _need_both_classes(tps: np.ndarray, fps: np.ndarray, what: str) -> None:
    if tps[-1] == 0 or fps[-1] == 0:
        only = "normal" if tps[-1] == 0 else "anomalous"
        raise DataError(f"{what} is undefined: all {int(tps[-1] + fps[-1])} samples are {only}. "
                        "Fix: evaluate on a set holding both normal and anomalous samples.")


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score: (fpr, tpr, thresholds), starting at (0, 0, +inf).

    Same points as `sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)`.
    """
    fps, tps, thr = _binary_clf_curve(scores, labels)
    _need_both_classes(tps, fps, "ROC curve")
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    return fpr, tpr, np.concatenate([[np.inf], thr.astype(np.float64)])


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1])) / 2.0)


def auroc(scores, labels) -> float:
    """Area under the ROC curve; ties count half, exactly as `sklearn.metrics.roc_auc_score`.

    scores: (N,) any real scores (higher = more anomalous); labels: (N,) 0/1 or bool.
    Raises DataError when only one class is present.
    """
    fps, tps, _ = _binary_clf_curve(scores, labels)
    _need_both_classes(tps, fps, "AUROC")
    # integer trapezoid: sum over steps of dFP * (TP_prev + TP) / 2, then normalise once
    fp = np.concatenate([[0], fps]).astype(np.float64)
    tp = np.concatenate([[0], tps]).astype(np.float64)
    return float(_trapezoid(fp, tp) / (fps[-1] * float(tps[-1])))


def precision_recall_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) like `sklearn.metrics.precision_recall_curve`.

    Thresholds ascending; precision/recall have one more entry, ending at (1, 0).
    """
    fps, tps, thr = _binary_clf_curve(scores, labels)
    if tps[-1] == 0:
        raise DataError("precision-recall curve is undefined without anomalous samples. "
                        "Fix: include at least one anomalous sample.")
    ps = tps + fps
    precision = tps / ps
    recall = tps / tps[-1]
    return (np.concatenate([precision[::-1], [1.0]]), np.concatenate([recall[::-1], [0.0]]),
            thr[::-1].astype(np.float64))


def f1_score(pred, labels) -> float:
    """Binary F1 = 2TP / (2TP + FP + FN) of boolean predictions; 0.0 when TP+FP+FN = 0 (sklearn)."""
    p = np.asarray(pred)
    y = np.asarray(labels)
    if p.shape != y.shape:
        raise DataError(f"predictions shape {p.shape} differs from labels shape {y.shape}")
    p = p.astype(bool, copy=False).ravel()
    y = y.astype(bool, copy=False).ravel()
    tp = int(np.count_nonzero(p & y))
    fp = int(np.count_nonzero(p & ~y))
    fn = int(np.count_nonzero(~p & y))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def best_f1_threshold(scores, labels) -> tuple[float, float]:
    """Threshold maximising F1 of `score > threshold`, and that F1.

    The threshold is the midpoint between the lowest score called anomalous and the next lower
    observed score (so strict and non-strict comparisons agree on the data); when every sample
    is called anomalous it sits half a score gap below the minimum. Ties in F1 pick the highest
    threshold (fewest alarms).
    """
    fps, tps, thr = _binary_clf_curve(scores, labels)
    if tps[-1] == 0:
        raise DataError("best-F1 threshold needs at least one anomalous sample; "
                        "use fovea.anomaly.postprocess.fit_thresholds for normal-only validation.")
    f1 = 2.0 * tps / (tps + fps + tps[-1])
    i = int(np.argmax(f1))
    t = thr.astype(np.float64)
    if i + 1 < t.size:
        threshold = (t[i] + t[i + 1]) / 2.0
    elif t.size > 1:
        threshold = t[i] - (t[i - 1] - t[i]) / 2.0
    else:
        threshold = t[i] - 1e-3 * max(abs(t[i]), 1.0)
    return float(threshold), float(f1[i])


def f1_max(scores, labels) -> float:
    """Best F1 over all thresholds (Anomalib's F1Max)."""
    return best_f1_threshold(scores, labels)[1]


def _check_maps_masks(maps, masks) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Validate maps/masks given as (N, H, W) stacks or lists of (H, W) arrays (sizes may differ).

    Returns flat float32 scores, flat bool labels and the list of (H, W) bool masks.
    """
    if isinstance(maps, np.ndarray) and maps.ndim == 2:
        maps = maps[None]
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = masks[None]
    if len(maps) != len(masks) or len(maps) == 0:
        raise DataError(f"got {len(maps)} anomaly maps and {len(masks)} masks; need one mask per map (and >= 1).")
    flat_m, flat_g, mask_list = [], [], []
    for i, (m, g) in enumerate(zip(maps, masks)):
        m = np.asarray(m)
        g = np.asarray(g)
        if m.ndim != 2 or m.shape != g.shape:
            raise DataError(f"anomaly map {i} has shape {m.shape} but its mask has {g.shape}; both must be the "
                            "same (H, W). Fix: resize maps to the mask resolution.")
        g = g.astype(bool, copy=False)
        flat_m.append(m.astype(np.float32, copy=False).ravel())
        flat_g.append(g.ravel())
        mask_list.append(g)
    return np.concatenate(flat_m), np.concatenate(flat_g), mask_list


def pixel_auroc(maps, masks) -> float:
    """Pixel-level AUROC over all pixels. maps: (N, H, W) float or a list of (H, W); masks: same, bool.

    Exact (sort-based, ties handled like sklearn) on the flattened float32 arrays.
    """
    m, g, _ = _check_maps_masks(maps, masks)
    return auroc(m, g)


def _component_labels(masks: list[np.ndarray], connectivity: int) -> tuple[np.ndarray, int]:
    """Label GT components per image, numbered globally from 1; returns (flat int32 labels, count)."""
    if connectivity not in (4, 8):
        raise DataError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = []
    total = 0
    for mask in masks:
        lab, n = ndimage.label(mask, structure=structure)
        out.append(np.where(lab > 0, lab + total, 0).astype(np.int32).ravel())
        total += n
    return np.concatenate(out), total


def _pro_weights(flat_masks: np.ndarray, masks: list[np.ndarray],
                 connectivity: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per-pixel PRO weight 1/(n_regions * |region|) and the normal-pixel indicator (flat)."""
    comp, n_regions = _component_labels(masks, connectivity)
    n_normal = int(flat_masks.size - np.count_nonzero(flat_masks))
    if n_regions == 0:
        raise DataError("AUPRO needs at least one anomalous region in the ground-truth masks; all masks are empty.")
    if n_normal == 0:
        raise DataError("AUPRO needs normal pixels to measure false positives; every mask pixel is anomalous.")
    sizes = np.bincount(comp.ravel(), minlength=n_regions + 1).astype(np.float64)
    inv = np.zeros(n_regions + 1, np.float64)
    inv[1:] = 1.0 / (n_regions * sizes[1:])
    return inv[comp], ~flat_masks, n_regions, n_normal


def pro_curve(maps, masks, num_thresholds: int | None = None,
              connectivity: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region-overlap curve (fpr, pro, thresholds), starting at (0, 0, +inf).

    At threshold t (pixel anomalous when map >= t), PRO is the mean over all ground-truth
    connected components (all images) of |pred ∩ C| / |C|; FPR is the fraction of all normal
    pixels predicted anomalous. Components use 8-connectivity by default, like the MVTec AD
    evaluation code (scipy.ndimage.label with a 3x3 structure). num_thresholds=None evaluates
    every distinct map value (exact); an int evaluates that many evenly spaced thresholds from
    the map minimum to its maximum (one pass, O(pixels)).
    """
    s, g, mask_list = _check_maps_masks(maps, masks)
    w_pro, normal, _, n_normal = _pro_weights(g, mask_list, connectivity)
    if not np.isfinite(s).all():
        raise DataError("anomaly maps hold NaN/inf values. Fix: check the model output.")
    if num_thresholds is None:
        order = np.argsort(s, kind="stable")[::-1]
        s_sorted = s[order]
        ends = np.append(np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1)
        pro = np.cumsum(w_pro[order])[ends]
        fp = np.cumsum(normal[order], dtype=np.int64)[ends]
        thr = s_sorted[ends].astype(np.float64)
    else:
        if num_thresholds < 2:
            raise DataError(f"num_thresholds must be >= 2 or None, got {num_thresholds}")
        s64 = s.astype(np.float64)
        thr_asc = np.linspace(s64.min(), s64.max(), int(num_thresholds))
        # bin k holds pixels with thr_asc[k] <= s < thr_asc[k+1]; mass with s >= thr[k] = reverse cumsum
        k = np.searchsorted(thr_asc, s64, side="right") - 1
        pro = np.cumsum(np.bincount(k, weights=w_pro, minlength=thr_asc.size)[::-1])
        fp = np.cumsum(np.bincount(k, weights=normal, minlength=thr_asc.size)[::-1])
        thr = thr_asc[::-1]
    fpr = np.concatenate([[0.0], fp / n_normal])
    pro = np.concatenate([[0.0], np.minimum(pro, 1.0)])
    return fpr, pro, np.concatenate([[np.inf], thr])


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under a monotone curve from x[0] to x_max, interpolating y at x_max."""
    inside = np.flatnonzero(x <= x_max)
    last = int(inside[-1])
    xs, ys = x[: last + 1], y[: last + 1]
    if xs[-1] < x_max and last + 1 < x.size:
        x0, y0, x1, y1 = x[last], y[last], x[last + 1], y[last + 1]
        y_at = y0 + (x_max - x0) * (y1 - y0) / (x1 - x0)
        xs = np.append(xs, x_max)
        ys = np.append(ys, y_at)
    return _trapezoid(xs, ys)


def aupro(maps, masks, fpr_limit: float = 0.3, num_thresholds: int | None = None,
          connectivity: int = 8) -> float:
    """Area under the PRO-vs-FPR curve for FPR in [0, fpr_limit], divided by fpr_limit (1.0 = perfect).

    maps: (N, H, W) float or a list of (H, W); masks: the same, bool. See `pro_curve` for PRO, connectivity and
    num_thresholds. The curve is interpolated linearly at fpr_limit (as in the MVTec AD code).
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise DataError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro, _ = pro_curve(maps, masks, num_thresholds=num_thresholds, connectivity=connectivity)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit
