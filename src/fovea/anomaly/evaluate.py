"""Evaluate anomaly results against ground truth: image AUROC/F1, pixel AUROC/F1, AUPRO.

Metrics that cannot be computed (one class only, no masks) are None with a line in
`metrics["notes"]` saying why — never dropped silently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fovea.core import AnomalyResult
from fovea.engine.metrics import aupro, auroc, f1_score, pixel_auroc
from fovea.errors import DataError, MaskMismatchError

__all__ = ["evaluate_anomaly"]


def evaluate_anomaly(results: Sequence[AnomalyResult], labels, gt_masks=None, *, raw_maps=None,
                     fpr_limit: float = 0.3) -> dict:
    """Metrics of anomaly results. labels: (N,) 0/1; gt_masks: None or N (H, W) bool masks at each
    result's map size (None entries allowed for normal images, meaning empty).

    Image AUROC uses raw scores when every result has one (normalised scores are clamped to
    [0, 1], which adds ties); image/pixel F1 use the 0.5 decision threshold. Pixel AUROC and AUPRO
    use the normalised maps, or `raw_maps` (N (H, W) arrays) when given. Returns a dict with
    n_images, n_normal, n_anomalous, tp/fp/tn/fn, image_auroc, image_f1, pixel_auroc, pixel_f1,
    aupro, fpr_limit and notes (list of str).
    """
    y = np.asarray(labels).astype(int).ravel()
    n = len(results)
    if n == 0:
        raise DataError("no results to evaluate. Fix: run the model on at least one test image.")
    if y.size != n:
        raise DataError(f"{n} results but {y.size} labels. Fix: pass one label per result.")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0 (normal) or 1 (anomalous), got {np.unique(y).tolist()}")
    notes: list[str] = []
    pred = np.array([bool(r.label) for r in results])
    truth = y.astype(bool)
    out: dict = {
        "n_images": n, "n_normal": int((~truth).sum()), "n_anomalous": int(truth.sum()),
        "tp": int((pred & truth).sum()), "fp": int((pred & ~truth).sum()),
        "tn": int((~pred & ~truth).sum()), "fn": int((~pred & truth).sum()),
        "image_auroc": None, "image_f1": None, "pixel_auroc": None, "pixel_f1": None, "aupro": None,
        "fpr_limit": float(fpr_limit),
    }
    raw = np.array([r.raw_score for r in results], np.float64)
    use_raw = bool(np.isfinite(raw).all())
    scores = raw if use_raw else np.array([r.score for r in results], np.float64)
    out["image_auroc_on"] = "raw_score" if use_raw else "score (normalised, clamped)"
    if truth.all() or not truth.any():
        notes.append(f"image AUROC skipped: all {n} test images are {'anomalous' if truth.all() else 'normal'}.")
    else:
        out["image_auroc"] = auroc(scores, truth)
    if truth.any():
        out["image_f1"] = f1_score(pred, truth)
    else:
        notes.append("image F1 skipped: no anomalous test images.")
    _pixel_metrics(results, truth, gt_masks, raw_maps, fpr_limit, out, notes)
    out["notes"] = notes
    return out


def _pixel_metrics(results, truth, gt_masks, raw_maps, fpr_limit, out, notes) -> None:
    """Fill pixel_auroc, pixel_f1 and aupro in `out`, or explain in `notes` why not."""
    if gt_masks is None:
        notes.append("pixel metrics skipped: no ground-truth masks.")
        return
    if len(gt_masks) != len(results):
        raise DataError(f"{len(gt_masks)} ground-truth masks for {len(results)} results")
    if raw_maps is not None and len(raw_maps) != len(results):
        raise DataError(f"{len(raw_maps)} raw maps for {len(results)} results")
    maps, preds, masks = [], [], []
    missing = 0
    for i, (r, g) in enumerate(zip(results, gt_masks)):
        if g is None:
            if truth[i]:
                missing += 1
                continue
            g = np.zeros(r.anomaly_map.shape, bool)
        g = np.asarray(g).astype(bool)
        if g.shape != r.anomaly_map.shape:
            raise MaskMismatchError(
                f"ground-truth mask of {r.image_path or f'image {i}'} is {g.shape[1]}x{g.shape[0]} but its anomaly "
                f"map is {r.anomaly_map.shape[1]}x{r.anomaly_map.shape[0]}. Fix: give masks the image's size.")
        m = r.anomaly_map if raw_maps is None else np.asarray(raw_maps[i])
        maps.append(m)
        preds.append(r.mask)
        masks.append(g)
    if missing:
        notes.append(f"{missing} anomalous image(s) without a mask left out of pixel metrics.")
    if not masks or not any(g.any() for g in masks):
        notes.append("pixel metrics skipped: no anomalous pixels in the ground-truth masks.")
        return
    if all(g.all() for g in masks):
        notes.append("pixel metrics skipped: every ground-truth pixel is anomalous.")
        return
    out["pixel_auroc"] = pixel_auroc(maps, masks)
    out["pixel_f1"] = f1_score(np.concatenate([p.ravel() for p in preds]),
                               np.concatenate([g.ravel() for g in masks]))
    out["aupro"] = aupro(maps, masks, fpr_limit=fpr_limit)
    if raw_maps is None:
        out["pixel_metrics_on"] = "normalised maps (clamped to [0, 1])"
    else:
        out["pixel_metrics_on"] = "raw maps"
