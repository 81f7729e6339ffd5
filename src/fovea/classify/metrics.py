"""Classification metrics from probabilities: top-1/top-k accuracy, per-class precision/recall, confusion."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fovea.errors import DataError


def confusion_matrix(targets, preds, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    t, p = np.asarray(targets, np.int64), np.asarray(preds, np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def topk_accuracy(probs: np.ndarray, targets, k: int) -> float:
    """Fraction of samples whose true class is among the k most probable (ties: lower index first)."""
    probs = np.asarray(probs)
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((order == np.asarray(targets)[:, None]).any(1).mean())


def classification_metrics(probs, targets, class_names: Sequence[str], topk: Sequence[int] = (1, 5)) -> dict:
    """Accuracy, top-k, per-class precision/recall/F1/support, macro averages and the confusion matrix.

    probs: (N, C) class probabilities; targets: (N,) class indices. Precision of a class never
    predicted is reported as 0 (as scikit-learn's zero_division=0).
    """
    probs = np.asarray(probs, np.float64)
    targets = np.asarray(targets, np.int64)
    if probs.ndim != 2 or len(probs) != len(targets) or len(targets) == 0:
        raise DataError(f"need probs (N, C) and N targets, got {probs.shape} and {targets.shape}")
    c = len(class_names)
    preds = probs.argmax(1)
    cm = confusion_matrix(targets, preds, c)
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(c), where=(precision + recall) > 0)
    out = {"n": int(len(targets)), "accuracy": float((preds == targets).mean())}
    for k in sorted(set(int(k) for k in topk)):
        if k <= c:
            out[f"top{k}_accuracy"] = topk_accuracy(probs, targets, k)
    out["per_class"] = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                               "support": int(support[i])} for i, name in enumerate(class_names)}
    present = support > 0
    out["macro_precision"] = float(precision[present].mean())
    out["macro_recall"] = float(recall[present].mean())
    out["confusion_matrix"] = cm.tolist()
    out["class_names"] = list(class_names)
    return out


def plot_confusion(cm, class_names: Sequence[str], path: str | Path, title: str = "confusion matrix") -> Path:
    """Counts and row-normalised shading (recall per true class) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
