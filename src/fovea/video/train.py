"""Training and evaluation of clip recognizers on the shared engine (`fovea.engine.train.fit`).

`VideoClassifyTask` is the engine's TaskSpec: cross-entropy on (clip, label) batches; validation
reports top-1 (`val_acc`), top-5 and mean class accuracy. `evaluate` runs a model over a loader
(optionally several views per video, fused by mean softmax) and returns the metrics with the
confusion matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fovea.video.metrics import confusion_matrix, mean_class_accuracy, top_k_accuracy


@torch.no_grad()
def predict_scores(model: torch.nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) and labels (N,) over a loader of (clip (B, 3, T, H, W) or views (B, V, 3, T, H, W), label).
    Views are fused by mean softmax (MMAction2's average_clips='prob'), returned as log-probabilities."""
    was = model.training
    model.eval()
    scores, labels = [], []
    for x, y in loader:
        if x.ndim == 6:
            b, v = x.shape[:2]
            probs = F.softmax(model(x.flatten(0, 1)), dim=-1).view(b, v, -1).mean(1)
            scores.append(probs.clamp_min(1e-12).log())
        else:
            scores.append(model(x))
        labels.append(y)
    model.train(was)
    return torch.cat(scores).numpy(), torch.cat(labels).numpy()


def evaluate(model: torch.nn.Module, loader: DataLoader, num_classes: int) -> dict:
    """top1, top5 (capped at K), mean class accuracy and the (K, K) confusion matrix (rows = truth)."""
    s, y = predict_scores(model, loader)
    return {"top1": top_k_accuracy(s, y, 1), "top5": top_k_accuracy(s, y, min(5, num_classes)),
            "mean_class_acc": mean_class_accuracy(s, y),
            "confusion": confusion_matrix(s.argmax(1), y, num_classes).tolist(), "n": int(len(y))}


class VideoClassifyTask:
    """TaskSpec for `fovea.engine.train.fit`: a clip recognizer trained with cross-entropy."""

    name = "video"

    def __init__(self, model: torch.nn.Module, class_names: list[str], label_smoothing: float = 0.0):
        self.model = model
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing

    def training_loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing)

    def validation_metrics(self, model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
        m = evaluate(model, loader, len(self.class_names))
        return {"val_acc": m["top1"], "val_top5": m["top5"], "val_mean_class_acc": m["mean_class_acc"]}
