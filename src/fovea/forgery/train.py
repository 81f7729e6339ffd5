"""Training and evaluation of forgery localisers with the engine's `fit`.

`train_forgery` trains a `ForgeryModelConfig` network on data sets that yield {"image": (3, h, w)
normalised, "target": (h, w) 0/1} (`fovea.forgery.data`), with pixel-wise BCE on the logits (the
SparseViT paper's loss); it saves the checkpoint folder `out_dir/model` and returns the task's
`TrainResult`. With validation data the kept epoch is the one of lowest validation loss, and the
decision threshold is then fitted on the validation images (the single threshold that maximises
their mean per-image F1) and stored in the checkpoint, so the answer's 0.5 is that threshold.
`evaluate_forgery` runs a predictor (any runtime) over a data set at each image's
own size and returns a `TestReport` with the metrics of `fovea.forgery.metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fovea.engine.checkpoint import save_checkpoint
from fovea.engine.progress import Progress
from fovea.engine.results import TestReport, TrainResult
from fovea.engine.train import TrainConfig, fit
from fovea.errors import DataError, MaskMismatchError
from fovea.forgery.metrics import forgery_metrics
from fovea.forgery.model import ForgeryModelConfig, ForgeryPipeline, build_network
from fovea.forgery.predictor import ForgeryPredictor


@dataclass
class ForgeryTask:
    """Engine task: BCE-with-logits per pixel (pos_weight: weight of manipulated pixels); validation:
    loss and mean per-image pixel F1 at 0.5 over the manipulated images (`val_f1`)."""

    model: nn.Module
    pos_weight: float | None = None
    name: str = "forgery"

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.pos_weight is None else torch.tensor(self.pos_weight, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), pos_weight=w)

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return self._loss(model(batch["image"]), batch["target"])

    @torch.no_grad()
    def validation_metrics(self, model: nn.Module, loader) -> dict[str, float]:
        loss_sum, n, f1s = 0.0, 0, []
        for batch in loader:
            logits = model(batch["image"]).float()
            loss_sum += float(self._loss(logits, batch["target"])) * len(logits)
            n += len(logits)
            pred, target = logits[:, 0] > 0, batch["target"].bool()
            for p, t in zip(pred, target):
                if t.any():
                    tp = int((p & t).sum())
                    f1s.append(2 * tp / (int(p.sum()) + int(t.sum())))
        return {"val_loss": loss_sum / max(n, 1), "val_f1": float(np.mean(f1s)) if f1s else 0.0}


def fit_threshold(network: nn.Module, dataset, batch_size: int = 16) -> float:
    """The threshold (of `metrics.GRID`) maximising the mean per-image F1 of `dataset`'s manipulated images,
    from the network's probabilities at its input size; 0.5 when the set holds no manipulated image."""
    from torch.utils.data import DataLoader

    probs, masks = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size):
            p = torch.sigmoid(network(batch["image"]).float())[:, 0]
            probs += list(p.numpy())
            masks += list(batch["target"].numpy() > 0)
    m = forgery_metrics(probs, masks, ["manipulated" if k.any() else "authentic" for k in masks])
    return float(m["overall"]["best_threshold"]) if "overall" in m else 0.5


def train_forgery(train_ds, val_ds, model_config: ForgeryModelConfig | None = None,
                  config: TrainConfig | None = None, *, pos_weight: float | None = None,
                  progress: Progress | None = None) -> TrainResult:
    """Train a forgery localiser from random init; the kept model (lowest `val_loss` with validation data,
    its threshold fitted on it; else the last epoch, threshold 0.5) is saved to `config.out_dir/model`."""
    model_config = model_config or ForgeryModelConfig()
    config = config or TrainConfig()
    if len(train_ds) == 0:
        raise DataError("the forgery training set is empty. Fix: point it at images with manipulation masks.")
    if tuple(getattr(train_ds, "size", model_config.input_size)) != model_config.input_size:
        raise DataError(f"the training set is resized to {train_ds.size} but the network takes "
                        f"{model_config.input_size}. Fix: build the data set with size={model_config.input_size}.")
    if val_ds is not None and config.monitor is None:  # threshold-free: val F1 at 0.5 can stay 0 for epochs
        config = replace(config, monitor="val_loss", mode="min")
    network = build_network(model_config)
    result = fit(ForgeryTask(network, pos_weight), train_ds, val_ds, config, progress=progress)
    pipe = ForgeryPipeline(network.eval(), model_config)
    threshold = fit_threshold(network, val_ds) if val_ds is not None and len(val_ds) else 0.5
    pipe.set_threshold(threshold)
    info = {"threshold": threshold, "best_metric": result.best_metric, "best_epoch": result.best_epoch, "monitor": config.monitor,
            "train_images": len(train_ds), "epochs": config.max_epochs, "fit_s": result.timings_s.get("fit")}
    checkpoint = save_checkpoint(pipe, Path(config.out_dir) / "model", info)
    return replace(result, task="forgery", checkpoint=checkpoint, out_dir=Path(config.out_dir))


def evaluate_forgery(predictor: ForgeryPredictor, dataset, progress: Progress | None = None) -> TestReport:
    """Metrics at each image's own resolution through the Predictor path (as deployed).

    dataset: `__len__`, `load(i) -> (image uint8, mask)`, `name(i)` and `kind(i)`. Rows: one per image
    {"image", "kind", "max_prob", "result"}.
    """
    probs, masks, kinds, rows = [], [], [], []
    t0 = time.perf_counter()
    n = len(dataset)
    for i in range(n):
        image, mask = dataset.load(i)
        name, kind = dataset.name(i), dataset.kind(i)
        if mask.shape != image.shape[:2]:
            raise MaskMismatchError(f"{name}: the image is {image.shape[1]}x{image.shape[0]} but its mask is "
                                    f"{mask.shape[1]}x{mask.shape[0]} (WxH). Fix: save the mask at the image size.")
        res = predictor.predict_one(image, name)
        probs.append(res.probs[1])
        masks.append(mask > 0)
        kinds.append(kind)
        rows.append({"image": name, "kind": kind, "max_prob": float(res.probs[1].max()), "result": res.to_dict()})
        if progress:
            progress("test", i + 1, n)
    metrics = forgery_metrics(probs, masks, kinds)
    return TestReport(task="forgery", model=str(predictor.source), backend=str(predictor.runtime),
                      data=str(getattr(dataset, "root", "")), metrics=metrics, rows=rows,
                      timings_s={"predict": time.perf_counter() - t0})
