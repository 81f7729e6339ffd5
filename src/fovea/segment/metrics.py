"""Segmentation metrics from a confusion matrix: per-class IoU, mean IoU, pixel accuracy."""

from __future__ import annotations

import numpy as np

from fovea.errors import DataError


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class, over all pixels."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    if pred.shape != target.shape:
        raise DataError(f"prediction has {pred.size} pixels but target has {target.size}")
    keep = np.ones_like(target, bool) if ignore_index is None else target != ignore_index
    pred, target = pred[keep], target[keep]
    for what, v in (("prediction", pred), ("target", target)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise DataError(f"{what} holds class {int(v.max())} (min {int(v.min())}) outside 0..{num_classes - 1}")
    return np.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """(C,) IoU = TP / (TP + FP + FN); NaN for a class absent from both prediction and target."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1e-300), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of the per-class IoUs over classes that occur (NaNs skipped)."""
    ious = iou_per_class(cm)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Correct pixels / all counted pixels."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def summarize(cm: np.ndarray, class_names: tuple[str, ...] | None = None) -> dict:
    """Plain-data report: mean IoU, pixel accuracy, per-class IoU by name, the matrix."""
    names = class_names or tuple(str(i) for i in range(len(cm)))
    ious = iou_per_class(cm)
    return {"mean_iou": mean_iou(cm), "pixel_accuracy": pixel_accuracy(cm),
            "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, ious)},
            "confusion_matrix": np.asarray(cm).tolist(), "class_names": list(names)}
