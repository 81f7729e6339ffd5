"""Recognition metrics (top-k, mean class accuracy, confusion matrix), multi-view score fusion,
and temporal localization: segments from per-frame scores, temporal NMS, ActivityNet-style mAP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fovea.errors import DataError


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise DataError(f"scores must be (N, K) with N = len(labels) > 0; got {scores.shape} and {labels.shape}")
    return scores, labels


def top_k_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction of rows whose true label is among the k highest scores (ties broken by index)."""
    scores, labels = _check(scores, labels)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


def mean_class_accuracy(scores, labels) -> float:
    """Mean over the classes present of the per-class recall (MMAction2's mean_class_accuracy)."""
    scores, labels = _check(scores, labels)
    cm = confusion_matrix(scores.argmax(1), labels, scores.shape[1])
    present = cm.sum(1) > 0
    return float(np.mean(np.diag(cm)[present] / cm.sum(1)[present]))


def fuse_views(view_scores, mode: str = "prob") -> np.ndarray:
    """(N, V, K) scores of V views (clips x crops) -> (N, K): mean softmax ("prob") or mean logit ("score")."""
    s = np.asarray(view_scores, dtype=np.float64)
    if mode == "prob":
        e = np.exp(s - s.max(-1, keepdims=True))
        s = e / e.sum(-1, keepdims=True)
    return s.mean(1)


# ------------------------------------------------------------------------ temporal localization
@dataclass(frozen=True)
class Segment:
    """A detected or true segment: [start_s, end_s], class index, score (1 for ground truth)."""

    start_s: float
    end_s: float
    label: int
    score: float = 1.0


def t_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal IoU of two [start, end] intervals."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def segments_from_scores(frame_scores, fps: float, threshold: float = 0.5, min_len_s: float = 0.0,
                         background: int | None = 0) -> list[Segment]:
    """Per-frame class probabilities (N, K) -> segments: runs of frames whose class-k score is at or above
    `threshold`, scored by the run's mean probability; frame k spans [k/fps, (k+1)/fps)."""
    p = np.asarray(frame_scores, dtype=np.float64)
    out = []
    for c in range(p.shape[1]):
        if c == background:
            continue
        on = np.concatenate([[False], p[:, c] >= threshold, [False]])
        starts = np.nonzero(on[1:] & ~on[:-1])[0]
        ends = np.nonzero(~on[1:] & on[:-1])[0]
        for s, e in zip(starts, ends):
            if (e - s) / fps >= min_len_s:
                out.append(Segment(s / fps, e / fps, c, float(p[s:e, c].mean())))
    return out


def temporal_nms(segments: list[Segment], iou_threshold: float = 0.5) -> list[Segment]:
    """Greedy per-class non-maximum suppression by temporal IoU, highest score first."""
    keep: list[Segment] = []
    for seg in sorted(segments, key=lambda s: -s.score):
        if all(k.label != seg.label or t_iou((k.start_s, k.end_s), (seg.start_s, seg.end_s)) <= iou_threshold
               for k in keep):
            keep.append(seg)
    return keep


def average_precision_at(detections: list[Segment], truths: list[Segment], iou_threshold: float) -> float:
    """AP of one class at one tIoU: detections matched greedily by score to unmatched truths with
    tIoU >= threshold; AP = mean over recall levels of the interpolated precision (ActivityNet:
    area under the monotone precision envelope). No truths -> nan."""
    if not truths:
        return float("nan")
    dets = sorted(detections, key=lambda s: -s.score)
    used = [False] * len(truths)
    tp = np.zeros(len(dets))
    for i, d in enumerate(dets):
        best, best_j = iou_threshold, -1
        for j, g in enumerate(truths):
            if not used[j]:
                iou = t_iou((d.start_s, d.end_s), (g.start_s, g.end_s))
                if iou >= best:
                    best, best_j = iou, j
        if best_j >= 0:
            used[best_j] = True
            tp[i] = 1
    if len(dets) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / len(truths)
    precision = ctp / np.arange(1, len(dets) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def localization_map(detections: list[Segment], truths: list[Segment],
                     iou_thresholds=(0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> dict[str, float]:
    """mAP over the classes with ground truth, per tIoU threshold, and their mean ("mAP@0.5:0.95")."""
    classes = sorted({g.label for g in truths})
    if not classes:
        raise DataError("localization_map: no ground-truth segments")
    out = {}
    for th in iou_thresholds:
        aps = [average_precision_at([d for d in detections if d.label == c], [g for g in truths if g.label == c], th)
               for c in classes]
        out[f"mAP@{th:g}"] = float(np.mean(aps))
    out["mAP@0.5:0.95"] = float(np.mean([out[f"mAP@{th:g}"] for th in iou_thresholds]))
    return out
