"""Training and evaluation of segmentation models with the engine's `fit`.

`train_segmenter` is the one entry point for every segmentation task (apples, sea oil films...):
data sets yield {"image": (3, h, w) normalised, "target": (h, w) int64}; it saves the checkpoint
folder `out_dir/model` and returns the task's `TrainResult` (open the model with
`fovea.load_predictor(result.checkpoint)`). `evaluate_segmenter` returns a `TestReport`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.engine.progress import Progress
from fovea.engine.results import TestReport, TrainResult
from fovea.engine.train import TrainConfig, fit
from fovea.errors import ConfigError, DataError
from fovea.segment.metrics import confusion_matrix, summarize
from fovea.segment.model import SegModelConfig, SegmentationModel, SegmentationPipeline
from fovea.segment.overlay import save_overlay
from fovea.segment.predictor import SegmentationPredictor


@dataclass
class SegmentationTask:
    """Engine task: pixel-wise cross-entropy (optional class weights); val metrics from a confusion matrix."""

    model: nn.Module
    num_classes: int
    class_weights: torch.Tensor | None = None
    name: str = "segment"

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        logits = model(batch["image"])
        w = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(logits, batch["target"], weight=w)

    @torch.no_grad()
    def validation_metrics(self, model: nn.Module, loader) -> dict[str, float]:
        cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        loss_sum, n = 0.0, 0
        for batch in loader:
            logits = model(batch["image"]).float()
            w = None if self.class_weights is None else self.class_weights.float()
            loss_sum += float(F.cross_entropy(logits, batch["target"], weight=w)) * len(logits)
            n += len(logits)
            cm += confusion_matrix(logits.argmax(1).numpy(), batch["target"].numpy(), self.num_classes)
        s = summarize(cm)
        return {"val_loss": loss_sum / max(n, 1), "val_miou": s["mean_iou"], "val_pixel_acc": s["pixel_accuracy"]}


def class_weights_from_frequency(dataset, num_classes: int, max_items: int = 200, power: float = 0.5) -> torch.Tensor:
    """Weights (C,) = (median freq / freq) ** power from up to `max_items` masks; rare classes count more."""
    counts = np.zeros(num_classes, np.float64)
    for i in range(min(len(dataset), max_items)):
        counts += np.bincount(dataset[i]["target"].numpy().ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1)
    w = np.where(freq > 0, (np.median(freq[freq > 0]) / np.maximum(freq, 1e-12)) ** power, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def train_segmenter(train_ds, val_ds, num_classes: int, class_names: Sequence[str], backbone: str = "efficientnet_lite0",
                    config: TrainConfig | None = None, *, weights: str | None = "default", head: str = "lraspp",
                    input_size: tuple[int, int] | None = None, class_weights: torch.Tensor | str | None = None,
                    low_index: int = 1, high_index: int = 3, progress: Progress | None = None) -> TrainResult:
    """Fine-tune a segmentation head + backbone with `fovea.engine.train.fit`.

    class_weights: None, a (C,) tensor, or "auto" (inverse square-root class frequency). The best
    (or last, without validation) model is saved to `config.out_dir/model`, the result's checkpoint;
    metrics are the kept epoch's validation metrics (val_miou, val_pixel_acc, val_loss).
    """
    config = config or TrainConfig()
    if len(train_ds) == 0:
        raise DataError("the segmentation training set is empty. Fix: point it at images with masks.")
    if val_ds is not None and config.monitor is None:
        config = replace(config, monitor="val_miou", mode="max")
    size = input_size or getattr(train_ds, "size", None)
    if size is None:
        raise ConfigError("input_size is unknown: pass input_size=(h, w) or a data set with .size")
    model = SegmentationModel(SegModelConfig(num_classes=num_classes, class_names=tuple(class_names),
                                             backbone=backbone, weights=weights, head=head, input_size=tuple(size),
                                             low_index=low_index, high_index=high_index))
    if isinstance(class_weights, str):
        if class_weights != "auto":
            raise ConfigError(f"class_weights={class_weights!r}; use 'auto', None or a tensor")
        class_weights = class_weights_from_frequency(train_ds, num_classes)
    task = SegmentationTask(model, num_classes, class_weights)
    result = fit(task, train_ds, val_ds, config, progress=progress)
    pipe = SegmentationPipeline(task.model.eval())
    info = {"best_metric": result.best_metric, "best_epoch": result.best_epoch, "monitor": config.monitor,
            "weights": str(model.weights_source), "class_weights": None if class_weights is None
            else [float(v) for v in class_weights]}
    checkpoint = pipe.save(Path(config.out_dir) / "model", extra=info)
    return replace(result, task="segment", checkpoint=Path(checkpoint), out_dir=Path(config.out_dir))


def evaluate_segmenter(predictor: SegmentationPredictor, dataset, overlay_dir: str | Path | None = None,
                       max_overlays: int = 16, progress: Progress | None = None) -> TestReport:
    """Metrics at each image's own resolution through the Predictor path (as deployed).

    dataset: anything with `__len__`, `load(i) -> (image uint8, mask int)` and `name(i)`. Returns the
    task's `TestReport`: metrics (per-class IoU, mean IoU, pixel accuracy, n_images), one row per image
    ({"image", "pixel_accuracy", "result"}) and the overlays written (prediction | ground truth).
    """
    n_cls = len(predictor.class_names)
    cm = np.zeros((n_cls, n_cls), np.int64)
    rows, paths = [], {}
    t0 = time.perf_counter()
    for i in range(len(dataset)):
        img, mask = dataset.load(i)
        if img.shape[:2] != mask.shape:
            dataset._check(i, img, mask)
        res = predictor.predict_one(img, dataset.name(i))
        cm += confusion_matrix(res.class_map, mask, n_cls)
        rows.append({"image": dataset.name(i), "pixel_accuracy": float((res.class_map == mask).mean()),
                     "result": res.to_dict()})
        if overlay_dir is not None and i < max_overlays:
            paths[f"overlay_{i:05d}"] = save_overlay(Path(overlay_dir) / f"{i:05d}.png", img, res.class_map,
                                                     predictor.class_names, target=mask)
        if progress:
            progress("test", i + 1, len(dataset))
    metrics = summarize(cm, predictor.class_names)
    metrics["n_images"] = len(dataset)
    return TestReport(task="segment", model=str(predictor.source), backend=str(predictor.runtime),
                      data=str(getattr(dataset, "root", "")), metrics=metrics, rows=rows, paths=paths,
                      timings_s={"predict": time.perf_counter() - t0})
