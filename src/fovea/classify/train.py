"""Train and evaluate image classifiers with `fovea.engine.train.fit`.

`train_classifier` fine-tunes (or linear-probes) a timm backbone with a new head on a class-folder
or CSV data set and writes `model.safetensors` + `recipe.json` + curves + `metrics.json`;
`evaluate_classifier` runs any predictor (in-process, TorchScript, ONNX) over a labelled set and
writes metrics + a confusion-matrix PNG.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fovea.classify.data import Augment, ImageClassDataset, balanced_sampler, load_samples, stratified_split
from fovea.classify.metrics import classification_metrics, plot_confusion
from fovea.classify.model import ClassifierRecipe, build_classifier, save_classifier
from fovea.classify.predictor import ClassifierPredictor, load_predictor
from fovea.engine.train import TrainConfig, TrainResult, fit
from fovea.errors import ConfigError
from fovea.io import read_image


class ClassificationTask:
    """TaskSpec for `fit`: cross-entropy on uint8 batches; val_loss, val_acc, val_top{k} on the val set."""

    def __init__(self, model: torch.nn.Module, label_smoothing: float = 0.0, topk: Sequence[int] = (1, 5)):
        self.model = model
        self.label_smoothing = float(label_smoothing)
        self.topk = tuple(topk)

    def training_loss(self, model, batch) -> torch.Tensor:
        logits = model(batch["image"])
        return F.cross_entropy(logits.float(), batch["target"], label_smoothing=self.label_smoothing)

    def validation_metrics(self, model, loader) -> dict[str, float]:
        probs, targets = predict_loader(model, loader)
        p_true = probs[np.arange(len(targets)), targets]
        out = {"val_loss": float(-np.log(np.clip(p_true, 1e-12, None)).mean()),
               "val_acc": float((probs.argmax(1) == targets).mean())}
        order = np.argsort(-probs, axis=1, kind="stable")
        for k in self.topk:
            if 1 < k < probs.shape[1]:
                out[f"val_top{k}"] = float((order[:, :k] == targets[:, None]).any(1).mean())
        return out


def predict_loader(model: torch.nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) softmax probabilities and (N,) targets over a loader of {"image", "target"} batches."""
    probs, targets = [], []
    with torch.no_grad():
        for batch in loader:
            probs.append(torch.softmax(model(batch["image"]).float(), 1).numpy())
            targets.append(batch["target"].numpy())
    return np.concatenate(probs), np.concatenate(targets)


@dataclass
class ClassifierTrainResult:
    out_dir: Path
    recipe: ClassifierRecipe
    train: TrainResult
    val_metrics: dict = field(default_factory=dict)
    train_seconds: float = 0.0


def train_classifier(train_source: str | Path, out_dir: str | Path, *, val_source: str | Path | None = None,
                     backbone: str = "efficientnet_lite0", weights: str = "default", input_size: int = 224,
                     linear_probe: bool = False, balanced: bool = False, val_fraction: float = 0.2,
                     augment: Augment | None = Augment(), label_smoothing: float = 0.0,
                     config: TrainConfig | None = None, topk: Sequence[int] = (1, 5)) -> ClassifierTrainResult:
    """Fine-tune (or linear-probe) `backbone` on `train_source` (class folders or CSV).

    Without `val_source`, a stratified `val_fraction` of the training set (seeded) is held out.
    The best epoch by `config.monitor` (default val_acc) is kept. Writes into `out_dir`:
    model.safetensors, recipe.json, curves.png, history.json, metrics.json, confusion_val.png.
    """
    config = replace(config or TrainConfig(), out_dir=str(out_dir))
    if config.monitor is None:
        config = replace(config, monitor="val_acc", mode="max")
    samples, names = load_samples(train_source)
    if val_source is not None:
        val_samples, _ = load_samples(val_source, names)
    else:
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction={val_fraction} must be in (0, 1) when no validation set is given.")
        samples, val_samples = stratified_split(samples, val_fraction, seed=config.seed)
    size = (int(input_size), int(input_size))
    train_ds = ImageClassDataset(samples, names, size, train=augment is not None, augment=augment)
    val_ds = ImageClassDataset(val_samples, names, size, train=False)
    recipe = ClassifierRecipe(backbone=backbone, class_names=list(names), input_size=size,
                              linear_probe=linear_probe, weights=str(weights))
    torch.manual_seed(config.seed)  # the new head's initialisation
    pipeline = build_classifier(recipe)
    task = ClassificationTask(pipeline, label_smoothing, topk)
    sampler = balanced_sampler(train_ds.targets, len(names)) if balanced else None
    t0 = time.perf_counter()
    result = fit(task, train_ds, val_ds, config, sampler=sampler)
    seconds = time.perf_counter() - t0
    out = save_classifier(task.model, recipe, out_dir)
    probs, targets = predict_loader(task.model.eval(), _loader(val_ds))
    metrics = classification_metrics(probs, targets, names, topk)
    plot_confusion(metrics["confusion_matrix"], names, out / "confusion_val.png", "validation (best epoch)")
    summary = {"split": "val", "train_seconds": seconds, "best_epoch": result.best_epoch,
               "best_metric": result.best_metric, "monitor": config.monitor, "recipe": recipe.to_dict(),
               "config": asdict(config), "n_train": len(train_ds), "n_val": len(val_ds), **metrics}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return ClassifierTrainResult(out, recipe, result, metrics, seconds)


def _loader(ds, batch_size: int = 64):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def evaluate_classifier(model: str | Path | ClassifierPredictor, data_source: str | Path, out_dir: str | Path,
                        topk: Sequence[int] = (1, 5)) -> dict:
    """Run a predictor over a labelled set at full image resolution; write metrics.json + confusion.png."""
    predictor = model if isinstance(model, ClassifierPredictor) else load_predictor(model)
    samples, names = load_samples(data_source, predictor.class_names)
    probs = np.concatenate([predictor.predict_probs([read_image(s.path) for s in samples[i:i + 32]])
                            for i in range(0, len(samples), 32)])
    targets = np.array([s.label for s in samples])
    metrics = classification_metrics(probs, targets, names, topk)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(metrics["confusion_matrix"], names, out / "confusion.png", f"{Path(data_source).name}")
    metrics = {"model": predictor.source, "backend": predictor.runtime, "data": str(data_source), **metrics}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
