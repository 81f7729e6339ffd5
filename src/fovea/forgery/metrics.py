"""Manipulation-localisation metrics: pixel F1 and AUC per image, averaged per forgery kind.

Conventions (SparseViT / IML benchmarks): pixel F1 is computed per manipulated image at a fixed
threshold (0.5) and averaged; `f1_best` uses ONE threshold for the whole set, the one that
maximises that average on the set itself (an oracle: it flatters, and is reported as such).
Pixel AUC: per manipulated image (both classes present), averaged, and pooled over the group's
pixels. Authentic images have no F1; their false-alarm pixel rate at 0.5 and an image-level AUC
(max probability as the image score, authentic vs manipulated) are reported instead.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fovea.engine.metrics import auroc, f1_score, pixel_auroc
from fovea.errors import DataError

GRID = np.round(np.arange(1, 100) / 100.0, 2)  # candidate thresholds of f1_best


def per_image(prob: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """prob (H, W) in [0, 1], mask (H, W) bool -> {"f1" (at p > 0.5), "auc" (NaN without both classes),
    "f1_grid" (99,) F1 of p >= t for t in GRID}."""
    prob, mask = np.asarray(prob, np.float32), np.asarray(mask, bool)
    if prob.shape != mask.shape:
        raise DataError(f"probability map {prob.shape} and mask {mask.shape} differ; both must be (H, W).")
    n_pos = int(mask.sum())
    auc = auroc(prob, mask) if 0 < n_pos < mask.size else float("nan")
    bins = np.clip(np.floor(prob * 100.0 + 1e-6).astype(np.int64), 0, 100)  # p >= t_k  <=>  bin >= k
    pos = np.bincount(bins[mask], minlength=101)
    neg = np.bincount(bins[~mask], minlength=101)
    tp = np.cumsum(pos[::-1])[::-1][1:100]  # predictions at thresholds 0.01 .. 0.99
    fp = np.cumsum(neg[::-1])[::-1][1:100]
    denom = 2 * tp + fp + (n_pos - tp)
    grid = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
    return {"f1": f1_score(prob > 0.5, mask), "auc": auc, "f1_grid": grid}


def _group(rows: list[dict]) -> dict[str, float]:
    aucs = [r["auc"] for r in rows if np.isfinite(r["auc"])]
    mean_grid = np.mean([r["f1_grid"] for r in rows], axis=0)
    k = int(np.argmax(mean_grid))
    return {"n": len(rows), "f1": float(np.mean([r["f1"] for r in rows])), "f1_best": float(mean_grid[k]),
            "best_threshold": float(GRID[k]), "auc": float(np.mean(aucs)) if aucs else float("nan")}


def forgery_metrics(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], kinds: Sequence[str]) -> dict:
    """probs / masks: one (H, W) map and bool mask per image; kinds: "authentic" or a forgery kind.

    Returns {"by_kind": {kind: {n, f1, f1_best, best_threshold, auc, pixel_auc}}, "overall": same over
    every manipulated image, "authentic": {n, false_alarm_px, ...}, "image_auc"}.
    """
    if not (len(probs) == len(masks) == len(kinds)) or not len(probs):
        raise DataError(f"got {len(probs)} maps, {len(masks)} masks, {len(kinds)} kinds; need one each (>= 1).")
    rows = [dict(per_image(p, m), kind=k, empty=not np.any(m)) for p, m, k in zip(probs, masks, kinds)]
    out: dict = {"by_kind": {}, "n_images": len(rows)}
    forged = [i for i, r in enumerate(rows) if not r["empty"]]
    for kind in sorted({rows[i]["kind"] for i in forged}):
        idx = [i for i in forged if rows[i]["kind"] == kind]
        out["by_kind"][kind] = dict(_group([rows[i] for i in idx]),
                                    pixel_auc=pixel_auroc([probs[i] for i in idx], [masks[i] for i in idx]))
    if forged:
        out["overall"] = dict(_group([rows[i] for i in forged]),
                              pixel_auc=pixel_auroc([probs[i] for i in forged], [masks[i] for i in forged]))
    clean = [i for i, r in enumerate(rows) if r["empty"]]
    if clean:
        out["authentic"] = {"n": len(clean), "false_alarm_px": float(np.mean([np.mean(probs[i] > 0.5) for i in clean])),
                            "images_flagged": float(np.mean([np.any(probs[i] > 0.5) for i in clean]))}
    if forged and clean:
        scores = [float(np.max(p)) for p in probs]
        out["image_auc"] = auroc(scores, [not r["empty"] for r in rows])
    return out
